"""Table 2 report on a synthetic store: runs created through MLflow with known predictions."""

import csv
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from fmnist import report
from fmnist.job import write_predictions
from fmnist.study import combined_command
from fmnist.tracking import CELL_TAG, OVERRIDES_TAG, SUMMARY_TAG, Tracker
from tests.conftest import compose_config

N = 10_000
LABELS = torch.arange(N) % 10


def predictions(accuracy: float, seed: int) -> torch.Tensor:
    """Predictions right on a seed-dependent set of images, with the given accuracy."""
    right = torch.zeros(N, dtype=torch.bool)
    right[torch.randperm(N, generator=torch.Generator().manual_seed(seed))[: int(accuracy * N)]] = True
    return torch.where(right, LABELS, (LABELS + 1) % 10)


def log_run(tracker: Tracker, folder: Path, cell: str, seed: int, readings: dict[int, torch.Tensor], overrides: list[str], epochs: int = 5):
    params = {"model.name": "mlp", "seed": seed, "schedule.epochs": epochs, "study.test_at": list(readings)[:-1]}
    run = tracker.start_run(f"{cell} {seed}", params, {CELL_TAG: cell, OVERRIDES_TAG: shlex.join(overrides)})
    for epoch in range(1, epochs + 1):
        run.log_metrics({"val/acc": 0.8 + 0.01 * epoch, "val/loss": 0.5 - 0.01 * epoch}, step=epoch)
    out = Path(tempfile.mkdtemp(dir=folder))
    for epoch, predicted in readings.items():
        run.log_metrics({"test/acc": (predicted == LABELS).float().mean().item()}, step=epoch)
        name = "test_predictions.csv" if epoch == epochs else f"test_predictions_epoch{epoch}.csv"
        write_predictions(out / name, LABELS, predicted)
    run.log_artifacts(out)
    run.finish()


@pytest.fixture
def study_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "table2")
    base_overrides = ["experiment=table2_baseline", "model=mlp", "data.train_size=500", "progress=false", f"tracking.uri={uri}"]
    baselines = {}
    for seed in (0, 1):
        baseline = baselines[seed] = predictions(0.90, seed)
        flipped = baseline.clone()
        wrong = (baseline != LABELS).nonzero()[:300, 0]  # flip fixes 300 of the baseline's mistakes
        flipped[wrong] = LABELS[wrong]
        log_run(tracker, tmp_path, "baseline", seed, {5: baseline}, base_overrides)
        log_run(tracker, tmp_path, "flip", seed, {5: flipped}, ["experiment=table2_flip", *base_overrides[1:]])
        log_run(tracker, tmp_path, "sgd", seed, {5: predictions(0.85, seed)}, ["experiment=table2_sgd", *base_overrides[1:]])
    # One 20-epoch run stands for epochs10 (read at epoch 10) and epochs20; only seed 0, like the study.
    log_run(tracker, tmp_path, "epochs", 0, {10: baselines[0], 20: predictions(0.89, 0)}, ["experiment=table2_epochs", *base_overrides[1:]], epochs=20)
    # A repeat of baseline seed 1: the latest run counts and the table says so.
    log_run(tracker, tmp_path, "baseline", 1, {5: predictions(0.90, 1)}, base_overrides)
    return uri, tmp_path


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    return {row["cell"]: row for row in csv.DictReader(path.open())}


def test_table2_rows_statistics_verdicts_and_files(study_store):
    uri, tmp_path = study_store
    out = tmp_path / "results"
    report.main(["--tracking-uri", uri, "--experiment", "table2", "--all", "--out", str(out), "--name", "t2"])
    rows = read_rows(out / "t2_mlp.csv")
    assert list(rows) == ["baseline", "epochs10", "epochs20", "sgd", "flip"]
    assert rows["baseline"]["n"] == "2" and float(rows["baseline"]["test_acc_mean"]) == pytest.approx(90.0)
    assert "1 repeated run(s) replaced" in rows["baseline"]["note"]
    assert rows["sgd"]["verdict"] == "worse" and float(rows["sgd"]["diff"]) == pytest.approx(-5.0)
    assert rows["flip"]["verdict"] == "better" and float(rows["flip"]["diff"]) == pytest.approx(3.0)
    assert (rows["flip"]["only_baseline_right"], rows["flip"]["only_cell_right"]) == ("0", "600")
    assert float(rows["flip"]["ci_low"]) > 0
    # epochs10 has the baseline's own predictions (seed 0): no difference at all.
    assert rows["epochs10"]["verdict"] == "no significant difference" and float(rows["epochs10"]["p_mcnemar"]) == 1.0
    assert rows["epochs10"]["paired_seeds"] == "1" and "epoch 10 of a 20-epoch run" in rows["epochs10"]["note"]
    assert rows["sgd"]["study_acc"] == "88.27" and rows["flip"]["study_acc"] == ""

    markdown = (out / "t2_mlp.md").read_text()
    assert "90.00 ± 0.00" in markdown and "+3.00 [" in markdown and "McNemar" in markdown
    latex = (out / "t2_mlp.tex").read_text()
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex and "$\\pm$" in latex
    for factor in ("epochs", "optimizer", "transform"):
        assert (out / f"t2_mlp_{factor}.png").stat().st_size > 10_000
    assert not (out / "t2_mlp_loss.png").exists()  # no loss cells were run

    client = MlflowClient(uri)
    summaries = client.search_runs([client.get_experiment_by_name("table2").experiment_id], f"tags.`{SUMMARY_TAG}` = '1'")
    assert len(summaries) == 1
    assert {a.path for a in client.list_artifacts(summaries[0].info.run_id)} >= {"t2_mlp.md", "t2_mlp.csv", "t2_mlp.tex"}


def test_combine_rules_pick_study_or_significant_gains(study_store, capsys):
    uri, tmp_path = study_store
    report.main(["--tracking-uri", uri, "--experiment", "table2", "--all", "--out", str(tmp_path / "r")])
    assert "Helpful by the study's (any gain) rule: flip" in capsys.readouterr().out
    report.main(["--tracking-uri", uri, "--experiment", "table2", "--all", "--out", str(tmp_path / "r"), "--strict"])
    assert "Helpful by the strict (significant gains only) rule: flip" in capsys.readouterr().out


def test_a_model_with_only_baseline_and_combined_runs_says_what_the_combination_was(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "table2")
    log_run(tracker, tmp_path, "baseline", 0, {5: predictions(0.90, 0)}, ["experiment=table2_baseline", "model=mlp", "seed=0"])
    earlier = ["experiment=table2_flip", "study.cell=combined", "model=mlp", "seed=0"]
    log_run(tracker, tmp_path, "combined", 0, {5: predictions(0.80, 0)}, earlier)
    chosen = ["experiment=table2_flip", "schedule.epochs=20", "study.cell=combined", "model=mlp", "seed=1", "threads=1"]
    log_run(tracker, tmp_path, "combined", 1, {20: predictions(0.92, 0)}, chosen, epochs=20)
    report.main(["--tracking-uri", uri, "--experiment", "table2", "--all", "--out", str(tmp_path / "r"), "--name", "t"])
    out = capsys.readouterr().out
    assert "1 earlier run(s) with other settings left out" in out  # the 5-epoch combined run is not pooled in
    assert "No single-factor cells for mlp" in out and "python -m fmnist.run -m experiment" not in out
    rows = read_rows(tmp_path / "r" / "t_mlp.csv")
    assert rows["combined"]["note"].startswith("ran experiment=table2_flip schedule.epochs=20 model=mlp")
    assert rows["combined"]["n"] == "1" and float(rows["combined"]["test_acc_mean"]) == pytest.approx(92.0)
    assert rows["combined"]["verdict"] == "no paired seeds"  # seed 1 has no baseline to pair with


def test_combined_command_is_accepted_by_hydra():
    command = combined_command(["epochs10", "adamw", "flip", "mse"], ["experiment=table2_baseline", "model=vgg", "seed=0"], [0, 1], "table2")
    words = shlex.split(command)
    assert words[:4] == ["python", "-m", "fmnist.run", "-m"]
    overrides = [w for w in words[4:] if not w.startswith("seed=")] + ["seed=1"]
    from fmnist.config import validate

    settings = validate(compose_config(overrides))
    assert settings.study.cell == "combined" and settings.model.name == "vgg" and settings.schedule.epochs == 10
    assert settings.optimizer.name == "adamw" and settings.transform.augment == ["flip"] and settings.loss.name == "mse"
    assert "seed=0,1" in words
    nothing = shlex.split(combined_command([], ["model=mlp"], [0], "table2"))
    assert "experiment=table2_baseline" in nothing


@pytest.mark.slow
def test_the_printed_combined_command_runs_and_becomes_the_combined_row(study_store, capsys, real_data_root):
    uri, tmp_path = study_store
    report.main(["--tracking-uri", uri, "--experiment", "table2", "--all", "--out", str(tmp_path / "r")])
    command = next(line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("python -m fmnist.run"))
    words = shlex.split(command)
    args = [sys.executable, *words[1:], "schedule.epochs=1", f"data.root={real_data_root}", f"hydra.sweep.dir={tmp_path}/multi"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report.main(["--tracking-uri", uri, "--experiment", "table2", "--all", "--out", str(tmp_path / "r"), "--name", "again"])
    rows = read_rows(tmp_path / "r" / "again_mlp.csv")
    assert rows["combined"]["n"] == "2" and rows["combined"]["study_acc"] == "92.86"
    assert rows["combined"]["note"].startswith("ran experiment=table2_flip")  # what the combination was
