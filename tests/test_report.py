"""The comparison report on a synthetic store: runs created through MLflow with known figures."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist import report
from fmnist.ledger import RunFacts
from fmnist.tracking import Tracker
from tests.conftest import store


def log(tracker: Tracker, lr: str, seed: int, acc: float, status: str = "FINISHED") -> None:
    run = tracker.start_run(f"lr={lr} seed={seed}", {"optimizer.lr": lr, "seed": seed, "model.name": "mlp"}, RunFacts(sweep_id="s1"))
    run.log_metrics({"val/acc": acc, "val/loss": 0.3, "epoch/seconds": 10.0 + seed}, step=1)
    run.log_metrics({"test/acc": acc, "test/loss": 0.3}, step=1)
    if status == "FINISHED":
        run.finish()
    else:
        run.fail("diverged")


def test_runs_that_differ_only_in_seed_are_pooled_into_mean_and_std(tmp_path):
    uri = store(tmp_path)
    tracker = Tracker(uri, "fmnist")
    for seed, acc in enumerate([0.90, 0.92, 0.94]):
        log(tracker, "0.001", seed, acc)
    for seed, acc in enumerate([0.80, 0.81]):
        log(tracker, "0.01", seed, acc)
    log(tracker, "0.01", 2, 0.10, status="FAILED")

    report.main(["--tracking-uri", uri, "--out", str(tmp_path / "out"), "--name", "lr"])
    summary = {r["optimizer.lr"]: r for r in csv.DictReader((tmp_path / "out" / "lr_seeds.csv").open())}
    assert summary["0.001"]["n"] == "3" and summary["0.001"]["seeds"] == "0 1 2"
    assert summary["0.001"]["test acc % (mean ± std)"] == "92.00 ± 2.00"
    assert summary["0.001"]["min"] == "90.00" and summary["0.001"]["max"] == "94.00"
    assert summary["0.01"]["n"] == "2" and summary["0.01"]["test acc % (mean ± std)"] == "80.50 ± 0.71"
    assert summary["0.001"]["train seconds (mean)"] == "11.0"
    text = (tmp_path / "out" / "lr.md").read_text()
    assert "Over seeds" in text and "did not finish (1)" in text  # the failed run is listed, not pooled


def test_seeds_on_different_processor_classes_or_precisions_are_never_pooled(tmp_path):
    uri = store(tmp_path)
    tracker = Tracker(uri, "fmnist")
    for seed, (processor, precision) in enumerate([("AVX512, native bf16", "bf16")] * 2 + [("AVX2, bf16 emulated", "fp32")] * 2):
        run = tracker.start_run(f"seed={seed}", {"seed": seed, "precision": precision}, RunFacts(sweep_id="s1", processor=processor))
        run.log_metrics({"val/acc": 0.9, "val/loss": 0.3, "epoch/seconds": 10.0 * (1 + seed)}, step=1)
        run.log_metrics({"test/acc": 0.9, "test/loss": 0.3}, step=1)
        run.finish()
    report.main(["--tracking-uri", uri, "--out", str(tmp_path / "out"), "--name", "classes"])
    rows = list(csv.DictReader((tmp_path / "out" / "classes.csv").open()))
    assert [r["processor, precision"] for r in rows].count("AVX2, bf16 emulated, fp32") == 2  # each run says what its seconds were on
    pooled = {r["processor, precision"]: r for r in csv.DictReader((tmp_path / "out" / "classes_seeds.csv").open())}
    assert pooled["AVX512, native bf16, bf16"]["train seconds (mean)"] == "15.0" and pooled["AVX512, native bf16, bf16"]["n"] == "2"
    assert pooled["AVX2, bf16 emulated, fp32"]["train seconds (mean)"] == "35.0"


def test_no_seed_section_when_every_run_has_the_same_seed(tmp_path):
    uri = store(tmp_path)
    tracker = Tracker(uri, "fmnist")
    log(tracker, "0.001", 0, 0.9)
    log(tracker, "0.01", 0, 0.8)
    report.main(["--tracking-uri", uri, "--out", str(tmp_path / "out"), "--name", "lr"])
    assert "Over seeds" not in (tmp_path / "out" / "lr.md").read_text()
    assert not (tmp_path / "out" / "lr_seeds.csv").exists()
    assert float(next(csv.DictReader((tmp_path / "out" / "lr.csv").open()))["test acc %"]) == pytest.approx(90.0)  # one unit: percent


def test_the_report_by_default_writes_where_git_does_not_look_and_leaves_the_checkout_clean(tmp_path):
    root = Path(__file__).resolve().parent.parent
    status = lambda: subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root, capture_output=True,  # noqa: E731
                                    text=True, check=True).stdout
    uri = store(tmp_path)
    tracker = Tracker(uri, "fmnist")
    for seed, acc in enumerate([0.90, 0.92]):
        log(tracker, "0.001", seed, acc)
    before = status()
    done = subprocess.run([sys.executable, "-m", "fmnist.report", "--tracking-uri", uri, "--name", "clean-check"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (root / "reports" / "clean-check.md").is_file() and "reports/clean-check.md" in done.stdout
    assert status() == before  # nothing new, changed or untracked for git: results/ is rewritten only when --out names it
    for made in (root / "reports").glob("clean-check*"):
        made.unlink()
