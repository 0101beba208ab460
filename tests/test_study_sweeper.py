"""`study=<name>` end to end: real Hydra with the study sweeper plugin, a real store, real data (a subset)."""

import csv
import shlex
import subprocess
import sys

import pytest

from fmnist import report
from fmnist.tracking import CELL_TAG, FACTOR_TAG, LEVEL_TAG, READINGS_TAG, STUDY_TAG
from tests.conftest import cli, runs_of, store

pytestmark = pytest.mark.slow
SMALL = ["model=mlp", "data.train_size=2000", "data.val_size=1000", "data.test_size=2000", "progress=false"]
COLUMNS = ["model", "cell", "factor", "level", "n_seeds", "test_acc_mean", "test_acc_std", "diff", "ci_low", "ci_high", "p", "p_holm",
           "verdict", "reference_acc"]


def sweep(tmp_path, *overrides, uri):
    done = cli(tmp_path, "-m", *overrides, *SMALL, f"tracking.uri={uri}")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def table(path) -> dict[str, dict[str, str]]:
    return {row["cell"]: row for row in csv.DictReader(path.open())}


def test_table2_runs_every_cell_and_the_report_rebuilds_from_its_export(tmp_path, real_data_root, capsys):
    uri = store(tmp_path)
    sweep(tmp_path, "study=table2", "seed=0,1,2", f"data.root={real_data_root}", uri=uri)
    _, runs = runs_of(uri, "table2")
    # Per seed: one 20-epoch run for baseline, epochs10 and epochs20, then sgd, adamw, flip, mse, nll.
    assert len(runs) == 18 and all(r.info.status == "FINISHED" for r in runs)
    shared = [r for r in runs if r.data.tags[CELL_TAG] == "epochs20"]
    assert len(shared) == 3 and all(r.data.params["schedule.epochs"] == "20" for r in shared)
    assert all('"cell": "baseline", "factor": "baseline", "level": "baseline", "epoch": 5' in r.data.tags[READINGS_TAG] for r in shared)
    sgd = next(r for r in runs if r.data.tags[CELL_TAG] == "sgd")
    assert (sgd.data.tags[STUDY_TAG], sgd.data.tags[FACTOR_TAG], sgd.data.tags[LEVEL_TAG]) == ("table2", "optimizer", "sgd")

    out = tmp_path / "results"
    report.main(["--tracking-uri", uri, "--out", str(out), "--export", str(tmp_path / "runs" / "mlp.csv")])
    printed = capsys.readouterr().out
    rows = table(out / "table2_mlp.csv")
    assert list(next(iter(rows.values())))[: len(COLUMNS)] == COLUMNS
    assert list(rows) == ["baseline", "epochs10", "epochs20", "sgd", "adamw", "flip", "mse", "nll"]
    assert all(r["n_seeds"] == "3" for r in rows.values())
    assert rows["nll"]["verdict"] == "identical"  # NLL of a log-softmax is cross-entropy
    assert rows["sgd"]["verdict"] == "worse" and float(rows["sgd"]["p_holm"]) < 0.05
    assert rows["sgd"]["reference_acc"] == "88.27" and rows["flip"]["reference_acc"] == ""
    assert "Combination chosen on validation" in printed and "The study's own choice: flip + adamw + mse" in printed

    again = tmp_path / "again"
    report.main(["--from", str(tmp_path / "runs"), "--out", str(again)])
    for name in ("table2_mlp.csv", "table2_mlp.tex"):
        assert (again / name).read_text() == (out / name).read_text(), name
    made_by = lambda text: text.split("\n", 3)[3]  # noqa: E731  (everything after the "Made by" line)
    assert made_by((again / "table2_mlp.md").read_text()) == made_by((out / "table2_mlp.md").read_text())

    # The printed combination runs as printed and becomes the combined row.
    line = next(w.strip() for w in printed.splitlines() if w.strip().startswith("python -m fmnist.run"))
    words = shlex.split(line)
    assert "study=table2" in words and "seed=0,1,2" in words
    done = subprocess.run([sys.executable, *words[1:], f"hydra.sweep.dir={tmp_path}/combined"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report.main(["--tracking-uri", uri, "--out", str(out)])
    rows = table(out / "table2_mlp.csv")
    assert rows["combined"]["n_seeds"] == "3" and rows["combined"]["level"] == next(w for w in words if w.startswith("study.combine="))[15:-1].replace(",", "+")

    # Run again: every job is found finished, nothing trains.
    rerun = sweep(tmp_path, "study=table2", "seed=0,1,2", f"data.root={real_data_root}", uri=uri)
    assert rerun.stderr.count("skipping: this configuration already finished") == 18


def test_the_regularisation_study_gives_a_table_too(tmp_path, real_data_root):
    uri = store(tmp_path)
    sweep(tmp_path, "study=regularisation", "seed=0,1,2", "schedule.epochs=2", f"data.root={real_data_root}", uri=uri)
    report.main(["--tracking-uri", uri, "--out", str(tmp_path / "out")])
    rows = table(tmp_path / "out" / "regularisation_mlp.csv")
    assert list(rows) == ["baseline", "decay_low", "decay_high", "smooth_low", "smooth_high", "erase", "crop"]
    assert {r["factor"] for r in rows.values()} == {"baseline", "weight_decay", "label_smoothing", "augmentation"}
    assert all(r["n_seeds"] == "3" and r["verdict"] for r in rows.values())


USER_STUDY = """\
# @package _global_
defaults:
  - override /hydra/sweeper: fmnist_study
study:
  name: widths
  factors:
    width:
      narrow: {overrides: ["model.hidden=[64]"]}
      wide: {overrides: ["model.hidden=[1024]"]}
    lr:
      fast: {overrides: [optimizer.lr=1e-3]}
tracking:
  experiment: widths
"""


def test_a_study_file_in_the_users_own_folder_needs_no_code(tmp_path, real_data_root):
    (tmp_path / "mine" / "study").mkdir(parents=True)
    (tmp_path / "mine" / "study" / "widths.yaml").write_text(USER_STUDY)
    uri = store(tmp_path)
    sweep(tmp_path, f"hydra.searchpath=[file://{tmp_path / 'mine'}]", "study=widths", "seed=0,1,2", "schedule.epochs=2",
          f"data.root={real_data_root}", uri=uri)
    report.main(["--tracking-uri", uri, "--out", str(tmp_path / "out")])
    rows = table(tmp_path / "out" / "widths_mlp.csv")
    assert list(rows) == ["baseline", "narrow", "wide", "fast"]
    assert all(r["n_seeds"] == "3" and r["p"] for r in list(rows.values())[1:])
    text = (tmp_path / "out" / "widths_mlp.md").read_text()
    assert f"hydra.searchpath=[file://{tmp_path / 'mine'}]" in text  # the combined command finds the study file too


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["study=table2", "optimizer=adamw"], "optimizer is set on the command line and by the study's cell 'sgd'"),
        (["study=table2", "schedule=cosine"], "schedule 'cosine' depends on the total number of epochs"),
        (["study=table2", "study.cells=[sdg]"], "study table2 has no cell 'sdg'"),
        (["study=table2", "study.factors.loss.mse.overrides=['loss=mes']"], "study table2, cell 'mse'"),
    ],
)
def test_a_bad_study_sweep_says_why_in_one_sentence_and_runs_nothing(tmp_path, overrides, message):
    uri = store(tmp_path)
    done = cli(tmp_path, "-m", *overrides, *SMALL, f"tracking.uri={uri}")
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
    assert runs_of(uri, "table2")[1] == []
