"""End to end: real Hydra, real SQLite MLflow store in tmp_path, real Fashion-MNIST (a small subset)."""

import csv
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from fmnist import report
from fmnist.config import run_spec
from fmnist.device import BF16_ENV
from fmnist.job import Launch, train
from tests.conftest import cli, compose_config, facts, runs_of, store

pytestmark = pytest.mark.slow
QUICK = ["model=mlp", "data.train_size=2000", "progress=false"]
EPOCH_METRICS = {"train/loss", "train/acc", "val/loss", "val/acc", "epoch/seconds"}
ARTIFACTS = {"config.yaml", "learning_curves.png", "confusion_matrix.png", "confusion_matrix.csv", "per_class_accuracy.csv", "test_predictions.csv", "model.pt"}


def test_one_run_records_params_metrics_per_epoch_tags_and_artifacts(tmp_path, real_data_root):
    uri = store(tmp_path)
    cfg = compose_config([*QUICK, "schedule.epochs=2", f"tracking.uri={uri}", f"data.root={real_data_root}"])
    accuracy = train(run_spec(cfg), Launch(["model=mlp", "schedule.epochs=2"], "sweep-1", tmp_path))
    assert accuracy > 0.7

    client, (run,) = runs_of(uri)
    assert run.info.status == "FINISHED" and run.info.run_name == "model=mlp schedule.epochs=2"
    assert run.data.params["model.name"] == "mlp" and run.data.params["optimizer.lr"] == "0.0003"
    assert run.data.params["schedule.epochs"] == "2" and run.data.params["data.train_size"] == "2000"
    for key in EPOCH_METRICS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    assert run.data.metrics["test/acc"] == pytest.approx(accuracy)
    assert 0 < run.data.metrics["test/loss"] < 1.5
    assert facts(run).sweep_id == "sweep-1" and len(facts(run).fingerprint) == 16
    assert run.data.tags["fmnist.device"] == "cpu" and run.data.tags["fmnist.host"]
    assert run.data.tags["mlflow.source.git.commit"]

    assert {a.path for a in client.list_artifacts(run.info.run_id)} == ARTIFACTS
    folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
    rows = list(csv.DictReader((folder / "test_predictions.csv").open()))
    assert len(rows) == 10_000
    assert sum(r["label"] == r["prediction"] for r in rows) / 10_000 == pytest.approx(accuracy)
    state = torch.load(folder / "model.pt", weights_only=True)
    assert state["1.weight"].shape == (512, 784)
    per_class = list(csv.DictReader((folder / "per_class_accuracy.csv").open()))
    assert len(per_class) == 10 and sum(int(r["count"]) for r in per_class) == 10_000
    confusion = list(csv.reader((folder / "confusion_matrix.csv").open()))[1:]
    assert sum(int(row[i + 1]) for i, row in enumerate(confusion)) == sum(r["label"] == r["prediction"] for r in rows)
    assert sum(int(c) for row in confusion for c in row[1:]) == 10_000
    assert "name: mlp" in (folder / "config.yaml").read_text()
    assert (tmp_path / "mlartifacts").is_dir()  # beside the store, not in the cwd of some job


def test_a_three_job_sweep_gives_three_runs_under_one_sweep_id_and_a_report(tmp_path, real_data_root):
    uri = store(tmp_path)
    done = cli(tmp_path, "-m", "loss=ce,mse,nll", *QUICK, "schedule.epochs=1", f"tracking.uri={uri}", f"data.root={real_data_root}")
    assert done.returncode == 0, done.stderr[-3000:]
    client, runs = runs_of(uri)
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    assert sorted(r.data.params["loss.name"] for r in runs) == ["ce", "mse", "nll"]
    assert len({facts(r).sweep_id for r in runs}) == 1
    assert len({facts(r).fingerprint for r in runs}) == 3
    assert [m.step for m in client.get_metric_history(runs[1].info.run_id, "val/acc")] == [1]
    assert re.search(r"job 2 of the sweep \(loss=nll\): trained after \d+\.\d min", done.stderr)  # a line per finished job

    report.main(["--tracking-uri", uri, "--out", str(tmp_path / "results"), "--name", "losses"])
    table = (tmp_path / "results" / "losses.md").read_text()
    assert table.count("| loss=") == 3 and "loss.name" in table and "test acc %" in table
    rows = list(csv.DictReader((tmp_path / "results" / "losses.csv").open()))
    assert [r["loss.name"] for r in rows] == ["ce", "mse", "nll"]
    expected = {r.data.params["loss.name"]: r.data.metrics["test/acc"] for r in runs}
    assert all(float(r["test acc %"]) == pytest.approx(100 * expected[r["loss.name"]]) for r in rows)
    assert (tmp_path / "results" / "losses_curves.png").stat().st_size > 10_000


def test_a_diverging_job_is_marked_failed_and_the_sweep_carries_on(tmp_path, real_data_root):
    uri = store(tmp_path)
    done = cli(
        tmp_path, "-m", "optimizer=sgd", "optimizer.momentum=0.9", "optimizer.lr=1e12,1e-3", *QUICK,
        "schedule.epochs=1", f"tracking.uri={uri}", f"data.root={real_data_root}",
    )
    assert done.returncode != 0
    _, runs = runs_of(uri)
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    assert "training loss became nan" in facts(runs[0]).failure

    report.main(["--tracking-uri", uri, "--out", str(tmp_path / "results"), "--name", "diverged"])
    table = (tmp_path / "results" / "diverged.md").read_text()
    assert "Runs that did not finish (1)" in table and "training loss became nan" in table


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.lr=-1", "error: optimizer.lr must be > 0, got -1.0"),
        ("data.root=/no/such/folder", "Fashion-MNIST not found"),
        ("device=cuda", "error: device=cuda was asked for but none is available here; use device=auto or device=cpu"),
        ("data.val_size=70000", "error: data.val_size must be in 1..59999, got 70000"),
        ("optimizer.betas=0.9", "error: optimizer.betas is not a setting of optimizer=adam; its settings are: lr, name, weight_decay"),
        ("model.resize=224", "error: model.resize is not a setting of model=mlp; its settings are: dropout, hidden, name"),
        ("optimizer.lr=fast", "error: optimizer.lr: Value 'fast' of type 'str' could not be converted to Float"),
    ],
)
@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_bad_input_gives_one_clear_line_and_writes_no_run(tmp_path, override, message, mode):
    if override.startswith("device") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    uri = store(tmp_path)
    done = cli(tmp_path, *(["-m", "seed=0,1"] if mode == "sweep" else []), *QUICK, f"tracking.uri={uri}", override)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    said = next(line for line in done.stderr.splitlines() if line.startswith("error: "))  # (missing data adds how to fix it)
    assert message.removeprefix("error: ") in said, said  # a sweep names the job first
    assert runs_of(uri, parents=True)[1] == []  # no run, and no parent run either


def test_wrong_group_option_lists_the_valid_ones(tmp_path):
    done = cli(tmp_path, "loss=mes")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == "error: loss=mes is not an option; choose one of: ce, mae, mse, nll"


@pytest.mark.parametrize("compiled", [False, True])
def test_the_fast_preset_runs_in_bf16_channels_last_and_saves_a_plain_model(tmp_path, real_data_root, compiled):
    if compiled and not shutil.which(os.environ.get("CXX", "g++")):
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    uri = store(tmp_path)
    done = cli(
        tmp_path, "experiment=fast", "model.channels=[8,16]", "data.train_size=3000", "schedule.epochs=2", "progress=false",
        f"compile={str(compiled).lower()}", f"tracking.uri={uri}", f"data.root={real_data_root}", env=os.environ | {BF16_ENV: "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client, (run,) = runs_of(uri, "fast")
    params = run.data.params
    assert params["precision"] == "bf16" and params["channels_last"] == "True" and params["transform.eval_flip"] == "True"
    assert params["compile"] == str(compiled) and params["model.name"] == "vgg"
    assert run.data.metrics["test/acc"] > 0.5  # learned: chance is 0.1
    folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
    state = torch.load(folder / "model.pt", weights_only=True)
    assert "0.weight" in state and state["0.weight"].dtype == torch.float32  # no compile wrapper prefix, fp32 weights


@pytest.mark.parametrize("native,expected", [("1", "bf16"), ("0", "fp32")])
def test_precision_auto_picks_what_the_cpu_does_natively_says_so_and_records_it(tmp_path, tiny_data, native, expected):
    uri = store(tmp_path)
    done = cli(tmp_path, "experiment=fast", "model.channels=[8,16]", "schedule.epochs=1", "data.val_size=16", "data.verify=false", "progress=false",
               f"tracking.uri={uri}", f"data.root={tiny_data}", env=os.environ | {BF16_ENV: native})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"precision=auto: {expected}, because this CPU" in done.stderr
    _, (run,) = runs_of(uri, "fast")
    assert run.data.params["precision"] == expected  # what it trained in, not "auto": runs of the two never pool
    assert "precision: " + expected in Path(MlflowClient(uri).download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
