"""The command line end to end in seconds, for the quick suite: a sweep on tiny IDX files through Hydra, the
study sweeper, the job, the store and the report; and bad input refused before any run. (The real data set,
studies, servers and Slurm: the slow tests.)"""

import csv
import subprocess
import sys

from tests.conftest import TINY, cli, runs_of, store


def test_a_tiny_sweep_is_one_parent_with_a_child_per_job_and_a_report(tmp_path, tiny_data):
    uri = store(tmp_path)
    done = cli(tmp_path, "-m", "loss=ce,mse", *TINY, f"data.root={tiny_data}", f"tracking.uri={uri}")
    assert done.returncode == 0, done.stderr[-2000:]
    _, found = runs_of(uri, parents=True)
    parents = [r for r in found if "fmnist.parent" in r.data.tags]
    children = [r for r in found if "fmnist.parent" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.params["loss.name"] for r in children) == ["ce", "mse"]
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id and r.info.status == "FINISHED" for r in children)
    report = subprocess.run([sys.executable, "-m", "fmnist.report", "--tracking-uri", uri, "--out", str(tmp_path / "results"),
                             "--name", "tiny"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "results" / "tiny.csv").open()))
    assert sorted(r["loss.name"] for r in rows) == ["ce", "mse"]


def test_bad_input_in_one_job_of_a_sweep_is_one_sentence_and_no_run(tmp_path, tiny_data):
    uri = store(tmp_path)
    done = cli(tmp_path, "-m", "optimizer.lr=0.01,-1", *TINY, f"data.root={tiny_data}", f"tracking.uri={uri}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("optimizer.lr must be > 0, got -1.0")
    assert runs_of(uri, parents=True)[1] == []
