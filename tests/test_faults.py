"""Faults as an adversary gives them to a parallel sweep: its worker processes SIGKILLed mid-job, once or every
time one job runs. A dead worker costs only its job's retry; the launch ends with a summary, never a traceback,
every job's epochs are logged once, and no run or parent is left RUNNING."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY, facts, is_parent, jobs_of, runs_of, steps, write_tiny_fmnist

pytestmark = pytest.mark.slow
SEEDS = 6


def sweep(tmp_path: Path) -> list[str]:
    root = write_tiny_fmnist(tmp_path / "tiny", n_train=96)
    return [sys.executable, "-m", "fmnist.run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"seed=range(0,{SEEDS})", *TINY,
            "schedule.epochs=3", "model.hidden=[64]", f"data.root={root}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"hydra.sweep.dir={tmp_path}/multi"]


def holders(folder: Path) -> dict[str, int]:
    """Live job leases: fingerprint -> the pid of the worker holding it."""
    found = {}
    for path in folder.glob("*.lease.*"):
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written
        if holder["token"] != "released" and not path.name.startswith("sweep-"):
            found[path.name.split(".")[0]] = holder["pid"]
    return found


def run_killing(tmp_path: Path, choose, limit: int) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the sweep, SIGKILLing the worker of each lease `choose(fingerprint, kills so far)` picks, at most `limit` times."""
    process = subprocess.Popen(sweep(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: list[str] = []
    seen: set[int] = set()
    deadline = time.time() + 600
    while process.poll() is None and time.time() < deadline:
        for fingerprint, pid in holders(tmp_path / "checkpoints").items():
            if len(killed) < limit and pid not in seen and pid != process.pid and choose(fingerprint, killed):
                seen.add(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(fingerprint)
                except ProcessLookupError:
                    pass
        time.sleep(0.02)
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), killed


def landed_once(tmp_path: Path, seeds: list[int]) -> None:
    client, runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", parents=True)
    jobs = [r for r in runs if not is_parent(r) and r.info.status == "FINISHED"]
    assert sorted(int(r.data.params["seed"]) for r in jobs) == seeds  # each job once
    for run in jobs:
        assert steps(client, run, "train/loss") == [1, 2, 3]  # each epoch once
    assert not [r for r in runs if r.info.status == "RUNNING"], [(r.info.run_name, r.info.status) for r in runs]


def test_a_killed_worker_costs_its_job_a_retry_not_the_launch(tmp_path):
    done, killed = run_killing(tmp_path, lambda fingerprint, killed: True, limit=2)
    assert len(killed) == 2, "the kills did not land"
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "a worker process died" in done.stdout + done.stderr
    landed_once(tmp_path, list(range(SEEDS)))
    (parent,) = [r for r in runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", parents=True)[1] if is_parent(r)]
    assert parent.info.status == "FINISHED" and len(jobs_of(parent)) == SEEDS


def victim_seed(tmp_path: Path, fingerprint: str) -> int:
    """The seed of the job whose lease is named by `fingerprint`."""
    from fmnist.config import run_spec
    from tests.conftest import compose_config

    base = [o for o in sweep(tmp_path)[4:] if not o.startswith(("seed=", "hydra.", "hydra/"))]
    return next(seed for seed in range(SEEDS) if run_spec(compose_config([*base, f"seed={seed}"])).fingerprint == fingerprint)


def test_a_job_that_kills_its_worker_every_time_fails_alone_with_one_sentence(tmp_path):
    victim = []

    def choose(fingerprint, killed):  # the first job seen, and only it, every time it runs
        victim[:] = victim or [fingerprint]
        return fingerprint == victim[0]

    done, killed = run_killing(tmp_path, choose, limit=99)
    assert len(killed) == 5  # three launches of the batch, then two of the job alone
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert last.startswith(f"error: 1 of 6 job(s) failed — seed={victim_seed(tmp_path, victim[0])}: its worker process died each time it ran, "
                           "alone too"), last
    client, runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", parents=True)
    (parent,) = [r for r in runs if is_parent(r)]
    assert parent.info.status == "FAILED" and facts(parent).failure.startswith("1 of 6 job(s) failed")
    (line,) = [j for j in jobs_of(parent) if j.outcome == "failed"]
    assert "its worker process died" in line.reason
    others = [r for r in runs if not is_parent(r) and r.info.status == "FINISHED"]
    assert len(others) == SEEDS - 1 and all(steps(client, r, "train/loss") == [1, 2, 3] for r in others)
    assert not [r for r in runs if r.info.status == "RUNNING"]  # the victim's run (if it got one) is closed too


def test_a_sweep_with_failed_and_cancelled_jobs_says_both_in_one_sentence():
    from types import SimpleNamespace

    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.fmnist_study_sweeper.slurm_launcher import JobCancelled
    from hydra_plugins.fmnist_study_sweeper.study_sweeper import StudyError, StudySweeper

    sweeper = StudySweeper.__new__(StudySweeper)  # the sentence alone: no Hydra, no store
    sweeper.owned = SimpleNamespace(facts=SimpleNamespace(varying=["seed"]), summary="")
    sweeper.failed = [JobReturn(overrides=["seed=1"], status=JobStatus.FAILED, _return_value=RuntimeError("training loss became nan"))]
    sweeper.cancelled = [JobReturn(overrides=["seed=2"], status=JobStatus.FAILED, _return_value=JobCancelled("cancelled", "54_2"))]
    with pytest.raises(StudyError) as raised:
        sweeper._raise_failures(4)
    said = str(raised.value)
    assert said.startswith("1 of 4 job(s) failed — seed=1: training loss became nan; and 1 of 4 job(s) cancelled on Slurm")
    assert "seed=2 (54_2)" in said and "retry the failed and cancelled ones" in said and "\n" not in said
