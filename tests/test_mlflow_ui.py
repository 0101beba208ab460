"""The MLflow UI as a user sees it, in a real headless Chromium: a sweep's parent run with its children.

Needs Debian's chromium and chromium-driver and Selenium; without them the test skips with a
message, unless FMNIST_REQUIRE_BROWSER=1 (CI), where it fails.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import cli, free_port, runs_of, store

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        message = f"no browser for the UI test: {', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("FMNIST_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=2600,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def serve(tmp_path: Path, uri: str):
    """`mlflow ui` on the store, as the docs start it: its URL, once it answers."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                               "--port", str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("mlflow ui did not answer within 120 s")
    return server, url


@pytest.fixture
def mlflow_ui(tmp_path):
    """`mlflow ui` on a store holding one three-job loss sweep."""
    uri = store(tmp_path)
    done = cli(tmp_path, "-m", "model=mlp", "loss=ce,mse,nll", "schedule.epochs=1", "data.train_size=1000", "data.val_size=1000",
               "progress=false", f"tracking.uri={uri}")
    assert done.returncode == 0, done.stderr[-3000:]
    server, url = serve(tmp_path, uri)
    yield url, uri
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def study_ui(tmp_path):
    """`mlflow ui` on a store holding a small study: table2's baseline and sgd cells, two seeds each."""
    uri = store(tmp_path)
    done = cli(tmp_path, "-m", "study=table2", "study.cells=[baseline,sgd]", "seed=0,1", "model=mlp", "data.train_size=1000",
               "data.val_size=1000", "data.test_size=1000", "progress=false", "threads=1", f"tracking.uri={uri}")
    assert done.returncode == 0, done.stderr[-3000:]
    server, url = serve(tmp_path, uri)
    yield url, uri
    server.terminate()
    server.wait(timeout=30)


def keep(driver, tmp_path: Path, name: str) -> Path:
    """A screenshot in the test's folder, and in $FMNIST_SCREENSHOTS where set (the docs' images are made that way)."""
    path = tmp_path / name
    driver.save_screenshot(str(path))
    if os.environ.get("FMNIST_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["FMNIST_SCREENSHOTS"]) / name)
    assert path.stat().st_size > 10_000
    return path


def wait_for(driver, xpath: str, timeout: float = 60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located((By.XPATH, xpath)))


def test_the_runs_table_shows_the_sweep_with_its_children_and_their_test_accuracy(mlflow_ui, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, uri = mlflow_ui
    client, runs = runs_of(uri)
    experiment = client.get_experiment_by_name("fmnist").experiment_id
    driver = browser()
    try:
        # The URL the report prints: the experiment opens on its runs table, not on the GenAI overview.
        driver.get(f"{url}/#/experiments/{experiment}?workflowType=machine_learning")
        parent = wait_for(driver, "//span[starts-with(normalize-space(.), 'sweep loss=ce,mse,nll')]")
        assert "/runs" in driver.current_url
        for close in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
            close.click()  # the assistant panel takes a third of the page
        cell = parent.find_element(By.XPATH, "./ancestor::*[@role='gridcell'][1]")
        cell.find_element(By.TAG_NAME, "button").click()  # the parent's toggle: show its children
        for name in ("loss=ce", "loss=mse", "loss=nll"):
            wait_for(driver, f"//span[normalize-space(.)='{name}']", timeout=30)

        driver.find_element(By.XPATH, "//button[normalize-space(.)='Columns']").click()
        search = wait_for(driver, "//input[@placeholder='Search columns']")
        search.send_keys("test/acc")
        option = wait_for(driver, "//strong[normalize-space(.)='test/acc']")
        option.find_element(By.XPATH, "./ancestor::div[contains(@class, 'tree-treenode')][1]").find_element(
            By.CSS_SELECTOR, "[class*='tree-checkbox']").click()
        search.send_keys(Keys.ESCAPE)
        wait_for(driver, "//*[@role='columnheader'][.//*[normalize-space(.)='test/acc']]", timeout=30)
        cells = [c.text.strip() for c in driver.find_elements(By.CSS_SELECTOR, "[role='gridcell'][col-id*='test/acc']")]
        values = [float(v) for v in cells if v not in ("", "-")]  # the parent holds no training: "-"
        expected = sorted(round(r.data.metrics["test/acc"], 2) for r in runs if "test/acc" in r.data.metrics)
        assert len(values) == 3 and sorted(round(v, 2) for v in values) == expected, cells
        driver.save_screenshot(str(tmp_path / "runs_table.png"))
    finally:
        driver.quit()
    assert (tmp_path / "runs_table.png").stat().st_size > 10_000


def test_a_studys_runs_are_told_apart_grouped_by_cell_and_its_parent_shows_the_table(study_ui, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, uri = study_ui
    client, runs = runs_of(uri, "table2", parents=True)
    experiment = client.get_experiment_by_name("table2").experiment_id
    (parent,) = [r for r in runs if "fmnist.parent" in r.data.tags]
    driver = browser()
    try:
        # The runs table grouped by fmnist.cell: each child named by cell and seed, no two alike.
        driver.get(f"{url}/#/experiments/{experiment}?workflowType=machine_learning")
        wait_for(driver, "//span[starts-with(normalize-space(.), 'sweep ')]")
        for close in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
            close.click()
        driver.find_element(By.XPATH, "//button[normalize-space(.)='Group by']").click()
        wait_for(driver, "//input[@placeholder='Search']").send_keys("fmnist.cell")
        wait_for(driver, "//*[@role='menu']//*[normalize-space(.)='fmnist.cell']").click()
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        for group in ("baseline", "sgd"):
            wait_for(driver, f"//*[normalize-space(.)='Group: {group}']", timeout=30)
            for seed in (0, 1):
                wait_for(driver, f"//a[normalize-space(.)='{group} · seed {seed}']", timeout=30)
        keep(driver, tmp_path, "runs_grouped_by_cell.png")
        # The same groups as charts: test accuracy per cell, each group's mean and range.
        driver.execute_script("arguments[0].click()", driver.find_elements(By.XPATH, "//input[@type='radio']")[1])
        wait_for(driver, "//input[@placeholder='Search metric charts']").send_keys("test/acc")
        wait_for(driver, "//*[normalize-space(.)='test/acc']", timeout=30)
        time.sleep(3)  # the chart draws after its card
        keep(driver, tmp_path, "test_acc_by_cell.png")
        # The parent's Overview: the study's table, as python -m fmnist.report prints it.
        driver.get(f"{url}/#/experiments/{experiment}/runs/{parent.info.run_id}")
        wait_for(driver, "//h1[normalize-space(.)='table2: mlp']", timeout=60)
        more = driver.find_elements(By.XPATH, "//*[normalize-space(.)='Show more' and not(.//*[normalize-space(.)='Show more'])]")
        if more:  # the description is folded: unfold it once (its innermost element, or a click on each level undoes the last)
            driver.execute_script("arguments[0].click()", more[0])
        wait_for(driver, "//*[normalize-space(.)='Show less']", timeout=30)
        assert driver.find_element(By.XPATH, "//td[normalize-space(.)='sgd']").is_displayed()
        keep(driver, tmp_path, "sweep_overview_table.png")
    finally:
        driver.quit()
