"""Sweeps that survive: parallel jobs, kill and resume, failure isolation, submitit, a tracking server."""

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cli, facts, is_parent, jobs_of, runs_of, steps, store

pytestmark = pytest.mark.slow
SMALL = ["model=mlp", "data.train_size=1000", "data.val_size=1000", "progress=false"]


def test_four_parallel_joblib_jobs_on_a_fresh_store_all_land(tmp_path, real_data_root):
    uri = store(tmp_path)
    done = cli(
        tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "seed=0,1,2,3", *SMALL,
        "schedule.epochs=2", f"tracking.uri={uri}", f"data.root={real_data_root}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client, runs = runs_of(uri)
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(steps(client, r) == [1, 2] and "test/acc" in r.data.metrics for r in runs)
    assert len({facts(r).sweep_id for r in runs}) == 1
    # threads left unset: the cores are shared out among the 4 parallel jobs.
    assert {r.data.tags["fmnist.threads"] for r in runs} == {str(max(1, len(os.sched_getaffinity(0)) // 4))}
    assert all(r.data.tags["fmnist.pid"] != str(os.getpid()) for r in runs)


def kill_when(uri: str, process: subprocess.Popen, condition, timeout: float = 300) -> None:
    """SIGKILL the sweep's whole process group as soon as `condition(runs)` holds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            client, runs = runs_of(uri)
            if condition(client, runs):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return
        except Exception:  # the store may be mid-creation
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail("the sweep never reached the point where it should be killed")


def test_a_sweep_killed_mid_job_resumes_and_ends_like_an_uninterrupted_one(tmp_path, real_data_root):
    uri = store(tmp_path)
    sweep = ["-m", "seed=0,1,2", "model=mlp", "schedule.epochs=3", "progress=false", f"tracking.uri={uri}", f"data.root={real_data_root}"]
    args = [sys.executable, "-m", "fmnist.run", *sweep, f"hydra.sweep.dir={tmp_path}/multi"]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=(tmp_path / "killed.log").open("w"), start_new_session=True)
    # Kill once the second job has logged an epoch and not finished (a checkpoint is on disk by then); on a busy machine the
    # look may come an epoch later, which changes nothing asserted below.
    kill_when(uri, process, lambda client, runs: len(runs) == 2 and runs[1].info.status == "RUNNING" and steps(client, runs[1]) != [],
              timeout=900)
    _, runs = runs_of(uri)
    assert [r.info.status for r in runs] == ["FINISHED", "RUNNING"]
    killed_id = runs[1].info.run_id

    again = cli(tmp_path, *sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skipping: this configuration already finished" in again.stderr
    assert f"resuming run {killed_id} after epoch " in again.stderr
    client, runs = runs_of(uri)
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    assert runs[1].info.run_id == killed_id  # the same MLflow run continued
    # No orphan: the killed launch's parent is closed by the next launch of the command, with what it had done.
    dead, alive = [r for r in runs_of(uri, parents=True)[1] if is_parent(r)]
    assert (dead.info.status, alive.info.status) == ("KILLED", "FINISHED")
    assert "its launch stopped without closing it" in facts(dead).failure and "1 of its 2 job run(s) had finished" in facts(dead).failure
    for run in runs:
        for key in ("train/loss", "val/acc", "epoch/seconds"):
            assert steps(client, run, key) == [1, 2, 3], (run.info.run_name, key)
    assert not list((tmp_path / "checkpoints").glob("*.pt"))  # finished runs leave no checkpoint

    # On the CPU a resumed run is bit-for-bit the uninterrupted one.
    reference = store(tmp_path / "ref")
    (tmp_path / "ref").mkdir()
    fresh = cli(tmp_path / "ref", "seed=1", "model=mlp", "schedule.epochs=3", "progress=false", f"tracking.uri={reference}", f"data.root={real_data_root}")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    _, (uninterrupted,) = runs_of(reference)
    for key in ("test/acc", "test/loss", "val/loss", "train/loss"):
        assert runs[1].data.metrics[key] == uninterrupted.data.metrics[key], key


def test_force_runs_a_finished_configuration_again(tmp_path, real_data_root):
    uri = store(tmp_path)
    overrides = [*SMALL, "schedule.epochs=1", f"tracking.uri={uri}", f"data.root={real_data_root}"]
    assert cli(tmp_path, *overrides).returncode == 0
    skipped = cli(tmp_path, *overrides)
    assert skipped.returncode == 0 and "skipping" in skipped.stderr
    assert len(runs_of(uri)[1]) == 1
    assert cli(tmp_path, *overrides, "force=true").returncode == 0
    assert [r.info.status for r in runs_of(uri)[1]] == ["FINISHED", "FINISHED"]


def test_a_corrupt_checkpoint_is_refused_and_the_run_starts_afresh(tmp_path, real_data_root):
    uri = store(tmp_path)
    overrides = [*SMALL, "schedule.epochs=1", f"tracking.uri={uri}", f"data.root={real_data_root}"]
    from fmnist.config import run_spec
    from tests.conftest import compose_config

    path = tmp_path / "checkpoints" / f"{run_spec(compose_config(overrides)).fingerprint}.pt"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 truncated")
    done = cli(tmp_path, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"checkpoint {path} is unreadable" in done.stderr and "starting afresh" in done.stderr
    assert [r.info.status for r in runs_of(uri)[1]] == ["FINISHED"]


def test_one_job_raising_and_one_diverging_do_not_stop_the_third(tmp_path, real_data_root):
    presets = tmp_path / "presets" / "experiment"
    presets.mkdir(parents=True)
    (presets / "t_ok.yaml").write_text("# @package _global_\nseed: 0\n")
    # An unwritable checkpoint folder stops a job before its run is created.
    (presets / "t_raise.yaml").write_text("# @package _global_\nseed: 1\ncheckpoint_dir: /proc/fmnist-cannot-write-here\n")
    (presets / "t_diverge.yaml").write_text(
        "# @package _global_\nseed: 2\ndefaults:\n  - override /optimizer: sgd\noptimizer:\n  lr: 1.0e12\n  momentum: 0.9\n"
    )
    uri = store(tmp_path)
    done = cli(
        tmp_path, "-m", "experiment=t_raise,t_diverge,t_ok", f"hydra.searchpath=[file://{tmp_path / 'presets'}]",
        *SMALL, "schedule.epochs=1", f"tracking.uri={uri}", f"data.root={real_data_root}",
    )
    assert done.returncode != 0  # the sweep says that some jobs failed
    _, runs = runs_of(uri)
    by_seed = {r.data.params["seed"]: r for r in runs}
    assert by_seed["0"].info.status == "FINISHED"
    assert "1" not in by_seed and "cannot write in the checkpoint folder /proc/fmnist-cannot-write-here" in done.stderr
    assert by_seed["2"].info.status == "FAILED" and "training loss became nan" in facts(by_seed["2"]).failure


def test_submitit_local_sweep_of_two_jobs(tmp_path, real_data_root):
    uri = store(tmp_path)
    done = cli(
        tmp_path, "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1",
        "seed=0,1", *SMALL, "schedule.epochs=1", f"tracking.uri={uri}", f"data.root={real_data_root}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _, runs = runs_of(uri)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert {r.data.params["seed"] for r in runs} == {"0", "1"}
    assert len({r.data.tags["fmnist.pid"] for r in runs} | {str(os.getpid())}) == 3  # each job its own process


def test_a_two_job_sweep_against_a_real_mlflow_server(tmp_path, mlflow_server, real_data_root):
    done = cli(tmp_path, "-m", "loss=ce,mse", *SMALL, "schedule.epochs=1", f"tracking.uri={mlflow_server}", f"data.root={real_data_root}")
    assert done.returncode == 0, done.stderr[-3000:]
    client, runs = runs_of(mlflow_server)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert sorted(r.data.params["loss.name"] for r in runs) == ["ce", "mse"]
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"model.pt", "test_predictions.csv"} <= artifacts
    assert (tmp_path / "server-artifacts").is_dir()  # the server stored them, over HTTP


def start(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "fmnist.run", *overrides, f"hydra.run.dir={tmp_path}/out-{time.time_ns()}"]
    return subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epoch(uri: str, epoch: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            client, runs = runs_of(uri)
            if runs and epoch in steps(client, runs[-1]):
                return
        except Exception:  # the store may be mid-creation
            pass
        time.sleep(0.1)
    pytest.fail(f"no run reached epoch {epoch}")


def test_a_onecycle_run_stopped_after_epoch_2_resumes_to_the_same_metrics_and_weights(tmp_path, real_data_root):
    overrides = [*SMALL, "schedule=onecycle", "schedule.epochs=4", "data.train_size=10000", "threads=1", f"data.root={real_data_root}"]
    uri = store(tmp_path)
    first = start(tmp_path, *overrides, f"tracking.uri={uri}")
    wait_for_epoch(uri, 2)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    client, (killed,) = runs_of(uri)
    assert killed.info.status == "KILLED" and steps(client, killed)[-1] >= 2
    again = cli(tmp_path, *overrides, f"tracking.uri={uri}")
    assert again.returncode == 0 and f"resuming run {killed.info.run_id}" in again.stderr, again.stderr[-2000:]

    (tmp_path / "ref").mkdir()
    reference = store(tmp_path / "ref")
    assert cli(tmp_path / "ref", *overrides, f"tracking.uri={reference}").returncode == 0
    _, (resumed,) = runs_of(uri)
    ref_client, (whole,) = runs_of(reference)
    for key in ("train/loss", "val/loss", "val/acc", "test/acc", "test/loss"):
        ours = [(m.step, m.value) for m in client.get_metric_history(resumed.info.run_id, key)]
        theirs = [(m.step, m.value) for m in ref_client.get_metric_history(whole.info.run_id, key)]
        assert sorted(ours) == sorted(theirs), key
    import torch

    a = torch.load(client.download_artifacts(resumed.info.run_id, "model.pt", str(tmp_path / "a")), weights_only=True)
    b = torch.load(ref_client.download_artifacts(whole.info.run_id, "model.pt", str(tmp_path / "b")), weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("where", ["sqlite", "server"])
def test_a_second_copy_of_a_live_job_does_not_train_and_names_the_owner(tmp_path, real_data_root, where, request):
    uri = store(tmp_path) if where == "sqlite" else request.getfixturevalue("mlflow_server")
    overrides = [*SMALL, "schedule.epochs=12", "data.train_size=20000", "threads=1", f"tracking.uri={uri}", f"data.root={real_data_root}"]
    owner = start(tmp_path, *overrides)
    wait_for_epoch(uri, 1)
    copy = cli(tmp_path, *overrides)
    assert copy.returncode != 0
    assert f"this job is already running on host {socket.gethostname()} as process {owner.pid}" in copy.stderr, copy.stderr[-2000:]
    assert owner.wait(timeout=600) == 0
    client, runs = runs_of(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    for key in ("val/loss", "train/loss", "epoch/seconds"):
        assert steps(client, runs[0], key) == list(range(1, 13)), key  # each epoch once
    assert not list((tmp_path / "checkpoints").glob("*.partial"))


LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1"],
}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_sweep_is_one_parent_run_with_a_named_child_per_job_and_a_rerun_lists_its_skips(tmp_path, real_data_root, launcher):
    uri = store(tmp_path)
    sweep = ["-m", *LAUNCHERS[launcher], "model=mlp", "schedule.epochs=1", "loss=ce,mse,nll", *SMALL[1:], f"tracking.uri={uri}",
             f"data.root={real_data_root}"]
    done = cli(tmp_path, *sweep)
    assert done.returncode == 0, done.stderr[-3000:]
    client, runs = runs_of(uri, parents=True)
    (parent,) = [r for r in runs if is_parent(r)]
    children = [r for r in runs if facts(r).parent_run_id == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("sweep loss=ce,mse,nll model=mlp")
    assert sorted(c.info.run_name for c in children) == ["loss=ce", "loss=mse", "loss=nll"] and len(runs) == 4
    for child in children:
        contexts = sorted(d.tags[0].value for d in child.inputs.dataset_inputs)
        assert contexts == ["test", "training", "validation"]
        assert all(len(d.dataset.digest) == 16 for d in child.inputs.dataset_inputs)

    again = cli(tmp_path, *sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    client, runs = runs_of(uri, parents=True)
    parents = [r for r in runs if is_parent(r)]
    assert len(parents) == 2 and len(runs) == 5  # a new parent, no new child
    rerun = max(parents, key=lambda r: r.info.start_time)
    jobs = jobs_of(rerun)
    assert sorted(j.outcome for j in jobs) == ["skipped"] * 3
    assert {j.run_id for j in jobs} == {c.info.run_id for c in children}
    assert rerun.info.status == "FINISHED"


def test_the_readmes_three_commands_give_a_report_of_three_runs(tmp_path, real_data_root):
    uri = store(tmp_path)
    common = ["model=mlp", "schedule.epochs=1", *SMALL[1:], f"tracking.uri={uri}", f"data.root={real_data_root}"]
    assert cli(tmp_path, *common).returncode == 0
    assert cli(tmp_path, "-m", *common, "loss=ce,mse,nll").returncode == 0
    from fmnist import report

    report.main(["--tracking-uri", uri, "--out", str(tmp_path / "out"), "--name", "losses"])
    rows = list(csv.DictReader((tmp_path / "out" / "losses.csv").open()))
    assert sorted(r["loss.name"] for r in rows) == ["ce", "mse", "nll"]
    client, runs = runs_of(uri, parents=True)
    parent = max((r for r in runs if "fmnist.parent" in r.data.tags), key=lambda r: r.info.start_time)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/losses.md", "report/losses.csv"}


def test_a_failed_job_makes_its_parent_failed_and_says_how_many(tmp_path, real_data_root):
    uri = store(tmp_path)
    done = cli(tmp_path, "-m", "optimizer=sgd", "optimizer.momentum=0.9", "optimizer.lr=1e12,1e-3", *SMALL, "schedule.epochs=1",
               f"tracking.uri={uri}", f"data.root={real_data_root}")
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and last.startswith("error: 1 of 2 job(s) failed — optimizer.lr=1000000000000.0: training loss became nan"), last
    assert "lower optimizer.lr" in last and "finished jobs are skipped" in last
    _, runs = runs_of(uri, parents=True)
    (parent,) = [r for r in runs if "fmnist.parent" in r.data.tags]
    assert parent.info.status == "FAILED" and parent.data.tags["fmnist.failed_jobs"] == "1"
    assert "1 of 2 job(s) failed" in parent.data.tags["fmnist.failure"]


def test_two_identical_sweeps_launched_at_once_train_each_job_once_and_both_end_finished(tmp_path, real_data_root):
    uri = store(tmp_path)
    overrides = ["-m", "seed=0,1,2", *SMALL, "schedule.epochs=3", "data.train_size=5000", "threads=1", f"tracking.uri={uri}",
                 f"data.root={real_data_root}"]
    cli(tmp_path, "-m", "seed=9", *overrides[2:])  # the store exists before the race (its creation is not what is tested)
    racers = [subprocess.Popen([sys.executable, "-m", "fmnist.run", *overrides, f"hydra.sweep.dir={tmp_path}/multi-{i}"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    ends = [r.communicate(timeout=600) for r in racers]
    assert [r.returncode for r in racers] == [0, 0], [err[-2000:] for _, err in ends]
    assert any("as a job of a sweep, this copy waits for it to end" in err for _, err in ends)  # they did meet
    client, found = runs_of(uri, parents=True)
    runs, parents = [r for r in found if not is_parent(r)], [r for r in found if is_parent(r)]
    trained = {r.data.params["seed"]: r for r in runs if r.data.params["seed"] != "9"}
    assert sorted(r.data.params["seed"] for r in runs if r.data.params["seed"] != "9") == ["0", "1", "2"]  # each job once
    assert all(r.info.status == "FINISHED" and steps(client, r) == [1, 2, 3] for r in trained.values())
    racing = [p for p in parents if "seed=0,1,2" in p.info.run_name]
    assert len(racing) == 2 and all(p.info.status == "FINISHED" for p in racing)
    lines = [line for p in racing for line in jobs_of(p)]
    assert sorted(line.outcome for line in lines) == ["skipped", "skipped", "skipped", "trained", "trained", "trained"], lines
    assert {line.run_id for line in lines} == {r.info.run_id for r in trained.values()}
