"""A shared MLflow server with a login: a real `mlflow server --app-name basic-auth`. Credentials come from the
environment (MLflow's own variables, or user:password in MLFLOW_TRACKING_URI); a sweep and its report work
with them, fail in one sentence without them, and the password appears in no file the project writes and
in no line it prints."""

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli, free_port, runs_of, wait_for_port

pytestmark = pytest.mark.slow
SMALL = ["model=mlp", "data.train_size=600", "data.val_size=200", "data.test_size=300", "schedule.epochs=1", "progress=false", "threads=1"]


@pytest.fixture
def auth_server(tmp_path):
    """(url, password) of a basic-auth MLflow server whose admin has a fresh random password."""
    password = secrets.token_urlsafe(18)
    folder = tmp_path / "server"
    folder.mkdir()
    (folder / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = MANAGE\n"
        f"database_uri = sqlite:///{folder / 'auth.db'}\nadmin_username = admin\nadmin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    env = os.environ | {"MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'store.db'}", "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    wait_for_port(port, server, "the basic-auth mlflow server")
    yield f"http://127.0.0.1:{port}", password, folder
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


def run(tmp_path, *args, env: dict, module: str = "fmnist.run") -> subprocess.CompletedProcess:
    if module == "fmnist.run":
        return cli(tmp_path, *args, env=env, timeout=600)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def clean_env() -> dict:
    env = dict(os.environ)
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return env


def nowhere(password: str, *folders: Path, texts: list[str]) -> None:
    for text in texts:
        assert password not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert password.encode() not in path.read_bytes(), f"the password is in {path}"


def test_a_sweep_and_its_report_work_with_credentials_from_the_environment_and_keep_them_secret(tmp_path, auth_server, real_data_root):
    url, password, server_folder = auth_server
    work = tmp_path / "work"
    work.mkdir()
    printed = []
    with_login = clean_env() | {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
    done = run(work, "-m", *SMALL, "seed=0,1", f"data.root={real_data_root}", env=with_login)
    printed += [done.stdout, done.stderr]
    assert done.returncode == 0, done.stderr[-2000:]
    report = run(work, "--out", str(work / "results"), env=with_login, module="fmnist.report")
    printed += [report.stdout, report.stderr]
    assert report.returncode == 0, report.stderr[-2000:]
    assert "In the MLflow UI: " + url in report.stdout

    # user:password in MLFLOW_TRACKING_URI works too: the pair goes to MLflow's variables, the URI keeps neither.
    host = url.removeprefix("http://")
    in_uri = clean_env() | {"MLFLOW_TRACKING_URI": f"http://admin:{password}@{host}"}
    done = run(work, *SMALL, "seed=2", f"data.root={real_data_root}", env=in_uri)
    printed += [done.stdout, done.stderr]
    assert done.returncode == 0, done.stderr[-2000:]

    # Without them: one sentence naming the variables, and no run.
    refused = run(work, *SMALL, "seed=3", f"data.root={real_data_root}", env=clean_env() | {"MLFLOW_TRACKING_URI": url})
    printed += [refused.stdout, refused.stderr]
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: the tracking server at {url} refused the login")
    assert "MLFLOW_TRACKING_USERNAME" in refused.stderr and "MLFLOW_TRACKING_PASSWORD" in refused.stderr

    # A password typed into a URI argument is refused before anything runs, and not echoed.
    typed = run(work, *SMALL, f"tracking.uri=http://admin:{password}@{host}", env=clean_env())
    printed += [typed.stdout, typed.stderr]
    assert typed.returncode != 0 and "give them in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in typed.stderr

    os.environ.update({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password})
    try:
        _, runs = runs_of(url)
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME")
        os.environ.pop("MLFLOW_TRACKING_PASSWORD")
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2"] and all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.params["tracking.uri"] == url for r in runs)
    nowhere(password, work, server_folder / "artifacts", texts=printed)
    with (server_folder / "store.db").open("rb") as db:  # params and tags live in the store's database
        assert password.encode() not in db.read()
