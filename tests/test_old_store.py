"""A store written by an earlier release still reads: tests/data/store-0b7361f.tar.gz was made by commit 0b7361f (a single
run, a two-job sweep whose first job that run already stood for, and a study sweep of three cells over three seeds, on tiny
IDX data), before the run's facts moved into fmnist.ledger. Today's code must read its runs, build its table, and take its
finished runs for the jobs they are: the same commands train nothing."""

import sqlite3
import tarfile
from pathlib import Path

import pytest

from fmnist import report
from tests.conftest import TINY, cli, runs_of, write_tiny_fmnist

FIXTURE = Path(__file__).parent / "data" / "store-0b7361f.tar.gz"
MADE_IN = "/tmp/fixture"  # where the store was written: its artifact paths name it


@pytest.fixture
def old_store(tmp_path) -> tuple[Path, str]:
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(tmp_path, filter="data")
    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # the store moved: its artifacts did too
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (MADE_IN, str(tmp_path)))
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (MADE_IN, str(tmp_path)))
    write_tiny_fmnist(tmp_path / "tiny", n_train=64, n_test=32, seed=0)
    return tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_the_old_store_builds_its_study_table(old_store, capsys):
    folder, uri = old_store
    report.main(["--tracking-uri", uri, "--experiment", "mini", "--all", "--out", str(folder / "report")])
    text = (folder / "report" / "mini_mlp.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["baseline"] == "3" and rows["mse"] == "3" and rows["sgd"] == "3"


def test_the_same_commands_train_nothing_on_the_old_store(old_store):
    folder, uri = old_store
    data = [f"data.root={folder / 'tiny'}", f"tracking.uri={uri}"]
    done = cli(folder, "-m", "loss=ce,mse", *TINY, *data)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("skipping: this configuration already finished") == 2
    _, study_before = runs_of(uri, "mini")
    done = cli(folder, "-m", f"hydra.searchpath=[file://{folder / 'mine'}]", "study=mini", "seed=0,1,2", *TINY, *data)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("skipping: this configuration already finished") == 9
    _, study_after = runs_of(uri, "mini")
    assert len(study_after) == len(study_before)  # no training run added, only sweeps' parents
