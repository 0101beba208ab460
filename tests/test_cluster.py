"""A sweep on a real Slurm cluster, logging to a real `mlflow server` on MariaDB, one job requeued mid-run.

Needs `bash scripts/local-cluster.sh start` (CI runs it). Without a cluster the test skips with a
message, unless FMNIST_REQUIRE_CLUSTER=1 (CI), where it fails.
"""

import getpass
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fmnist import report
from tests.conftest import facts, is_parent, jobs_of, steps

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
CLUSTER_ENV = Path(os.environ.get("FMNIST_CLUSTER_DIR", f"/var/tmp/fmnist-cluster-{getpass.getuser()}")) / "env"


@pytest.fixture
def server() -> str:
    url = os.environ.get("FMNIST_MLFLOW_SERVER")
    if not url and CLUSTER_ENV.is_file():
        url = dict(line.split("=", 1) for line in CLUSTER_ENV.read_text().split()).get("FMNIST_MLFLOW_SERVER")
    reachable = False
    if url:
        try:
            import urllib.request

            urllib.request.urlopen(f"{url}/health", timeout=5)
            reachable = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0
        except Exception:
            reachable = False
    if not reachable:
        message = "no local Slurm cluster and MLflow server: run `bash scripts/local-cluster.sh start`"
        if os.environ.get("FMNIST_REQUIRE_CLUSTER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


def slurm_sweep(server: str, experiment: str, tmp_path, data_root, *overrides: str) -> list[str]:
    """`python -m fmnist.run -m` through the local Slurm cluster, one core per job, into its own experiment."""
    return [
        sys.executable, "-m", "fmnist.run", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.gpus_per_node=0", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=20", "model=mlp", "data.test_size=2000",
        "progress=false", *overrides, f"tracking.uri={server}", f"tracking.experiment={experiment}", f"data.root={data_root}",
        f"checkpoint_dir={tmp_path / 'checkpoints'}", f"hydra.sweep.dir={tmp_path / 'multi'}",
    ]


def runs(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def test_a_slurm_sweep_with_a_requeued_job_lands_every_epoch_exactly_once(server, tmp_path, real_data_root):
    experiment = f"cluster-{uuid.uuid4().hex[:8]}"
    epochs = 30  # long enough that the requeue's SIGKILL (KillWait=10 s after SIGTERM) lands mid-training
    command = slurm_sweep(server, experiment, tmp_path, real_data_root, "seed=0,1", "data.train_size=20000", f"schedule.epochs={epochs}")
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(server)

    # Requeue the first job once it has logged two epochs: Slurm signals it, kills it, and starts it again.
    deadline, victim = time.time() + 600, None
    while time.time() < deadline and victim is None:
        for run in runs(client, experiment):
            if not is_parent(run) and len(steps(client, run)) >= 2 and facts(run).slurm_job:
                victim = run
                break
        time.sleep(1)
    assert victim is not None, "no Slurm job reached epoch 2"
    job = victim.data.tags["fmnist.slurm_job"]
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)

    output, _ = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, output[-4000:]
    found = runs(client, experiment)
    (parent,) = [r for r in found if is_parent(r)]
    children = [r for r in found if not is_parent(r)]
    assert parent.info.status == "FINISHED"
    assert len(children) == 2 and all(facts(r).parent_run_id == parent.info.run_id for r in children)
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1"]
    for run in children:
        assert run.info.status == "FINISHED"
        for key in ("train/loss", "val/acc", "epoch/seconds"):
            assert steps(client, run, key) == list(range(1, epochs + 1)), (run.info.run_name, key)
    history = subprocess.run(["sacct", "-n", "-D", "-X", "-j", job, "-o", "State"], capture_output=True, text=True, timeout=60).stdout
    assert history.split()[0] == "REQUEUED" and history.split()[-1] == "COMPLETED", history  # killed once, then ran again
    outcomes = jobs_of(parent)
    resumed = [o for o in outcomes if o.outcome == "resumed"]
    assert len(outcomes) == 2 and [o.run_id for o in resumed] == [victim.info.run_id], outcomes  # the same run, continued

    out = tmp_path / "report"
    report.main(["--tracking-uri", server, "--experiment", experiment, "--out", str(out), "--name", "cluster"])
    assert (out / "cluster.csv").read_text().count("\n") == 3  # header + the two runs, read from the server


def test_a_job_requeued_before_its_first_checkpoint_leaves_no_orphan_and_its_sweep_finished(server, tmp_path, real_data_root):
    experiment = f"cluster-{uuid.uuid4().hex[:8]}"
    command = slurm_sweep(server, experiment, tmp_path, real_data_root, "seed=0", "data.train_size=40000", "batch_size=4", "schedule.epochs=2")
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(server)
    # Requeue as soon as the job's run exists, during epoch 1 (10,000 steps: longer than Slurm's 10 s between SIGTERM and
    # SIGKILL): no checkpoint yet, so the requeued job starts a new run.
    deadline, victim = time.time() + 600, None
    while time.time() < deadline and victim is None:
        victim = next((r for r in runs(client, experiment) if not is_parent(r) and facts(r).slurm_job), None)
        time.sleep(0.5)
    assert victim is not None and not steps(client, victim), "the job's run did not appear before its first epoch ended"
    subprocess.run(["scontrol", "requeue", victim.data.tags["fmnist.slurm_job"]], check=True, timeout=60)

    output, _ = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, output[-4000:]
    found = runs(client, experiment)
    (parent,) = [r for r in found if is_parent(r)]
    children = {r.info.run_id: r for r in found if not is_parent(r)}
    (finished,) = [r for r in children.values() if r.info.status == "FINISHED"]
    assert steps(client, finished) == [1, 2]
    orphans = [r for r in children.values() if r.info.run_id != finished.info.run_id]
    assert [r.info.run_id for r in orphans] == [victim.info.run_id], "the requeued job should have left its first run behind"
    assert all(r.info.status == "KILLED" and r.data.tags["fmnist.superseded_by"] == finished.info.run_id for r in orphans), orphans
    assert parent.info.status == "FINISHED" and "fmnist.failed_jobs" not in parent.data.tags  # a job, not its runs, is what fails


def test_a_search_on_slurm_shares_one_optuna_study_on_mariadb_without_duplicates(server, tmp_path, real_data_root):
    storage = dict(line.split("=", 1) for line in CLUSTER_ENV.read_text().split()).get("FMNIST_OPTUNA_STORAGE")
    assert storage, f"{CLUSTER_ENV} names no FMNIST_OPTUNA_STORAGE; restart the cluster (bash scripts/local-cluster.sh start)"
    experiment = f"search-{uuid.uuid4().hex[:8]}"
    command = slurm_sweep(server, experiment, tmp_path, real_data_root, "hydra.launcher.array_parallelism=2", "search=mlp_regularisation",
                          "search.trials=4", "search.confirm.top=0", "data.train_size=2000", "schedule.epochs=2")
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=os.environ | {"FMNIST_OPTUNA_STORAGE": storage})
    assert done.returncode == 0, done.stderr[-4000:]
    assert storage.split("@")[0].split(":")[-1] not in done.stdout + done.stderr  # the database password is never printed
    client = MlflowClient(server)
    trials = [r for r in runs(client, experiment) if "fmnist.trial" in r.data.tags]
    assert sorted(int(r.data.tags["fmnist.trial"]) for r in trials) == [0, 1, 2, 3]
    assert all(r.data.tags.get("fmnist.slurm_job") for r in trials)  # each trial ran as a Slurm job
    import optuna

    study_name = trials[0].data.tags["fmnist.optuna_study"]
    stored = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    assert sorted(t.number for t in stored) == [0, 1, 2, 3] and all(t.state.is_finished() for t in stored)
    assert all("mysql" not in v and storage not in v for r in trials for v in [*r.data.params.values(), *r.data.tags.values()])


def first_job_run(client: MlflowClient, experiment: str, epochs_done: int = 0, timeout: float = 600):
    """The first job run of the experiment's sweep on Slurm to have logged `epochs_done` epochs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for run in runs(client, experiment):
            if not is_parent(run) and facts(run).slurm_job and run.info.status == "RUNNING" and len(steps(client, run)) >= epochs_done:
                return run
        time.sleep(0.5)
    raise AssertionError(f"no Slurm job of {experiment} reached epoch {epochs_done}")


def sweep_with_a_fault(server: str, tmp_path, data_root, seeds: str, epochs: int, fault) -> tuple:
    """A Slurm sweep whose first job, once it has logged an epoch, gets `fault(run)`; the sweep's end as
    (its exit code, everything it printed, the victim's run, the parent, the job runs, the client)."""
    experiment = f"cluster-{uuid.uuid4().hex[:8]}"
    command = slurm_sweep(server, experiment, tmp_path, data_root, f"seed={seeds}", "data.train_size=20000", f"schedule.epochs={epochs}")
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(server)
    victim = first_job_run(client, experiment, epochs_done=1)
    fault(victim)
    out, err = sweep.communicate(timeout=900)
    found = runs(client, experiment)
    (parent,) = [r for r in found if is_parent(r)]
    return sweep.returncode, out + err, victim, parent, [r for r in found if not is_parent(r)], client


def test_a_cancelled_task_is_its_jobs_outcome_and_the_sweep_waits_for_the_others_and_ends_0(server, tmp_path, real_data_root):
    cancel = lambda run: subprocess.run(["scancel", facts(run).slurm_job], check=True, timeout=60)  # noqa: E731
    code, said, victim, parent, children, client = sweep_with_a_fault(server, tmp_path, real_data_root, "0,1,2", 12, cancel)
    assert code == 0, said[-4000:]
    summary = [line for line in said.splitlines() if "cancelled on Slurm" in line]
    expected = f"1 of 3 job(s) cancelled on Slurm before they finished — seed={victim.data.params['seed']} ({facts(victim).slurm_job})"
    assert summary and expected in summary[-1], said[-3000:]
    assert parent.info.status == "FINISHED" and "cancelled on Slurm" in parent.data.tags["mlflow.note.content"]
    outcomes = {o.run_id: o.outcome for o in jobs_of(parent)}
    assert outcomes[victim.info.run_id] == "cancelled" and sorted(outcomes.values()) == ["cancelled", "trained", "trained"], outcomes
    closed = client.get_run(victim.info.run_id)
    assert closed.info.status == "KILLED" and "was cancelled before it finished" in closed.data.tags["mlflow.note.content"]
    others = [r for r in children if r.info.run_id != victim.info.run_id]
    assert len(children) == 3 and all(r.info.status == "FINISHED" and steps(client, r) == list(range(1, 13)) for r in others)


def test_a_task_whose_training_process_is_killed_is_submitted_again_and_resumes(server, tmp_path, real_data_root):
    kill = lambda run: os.kill(facts(run).pid, 9)  # noqa: E731  (the local cluster's node is this machine)
    code, said, victim, parent, children, client = sweep_with_a_fault(server, tmp_path, real_data_root, "0,1", 8, kill)
    assert code == 0, said[-4000:]
    assert "ended without a result" in said and "submitting their jobs again (try 2 of 3)" in said, said[-3000:]
    assert parent.info.status == "FINISHED"
    assert len(children) == 2 and all(r.info.status == "FINISHED" and steps(client, r) == list(range(1, 9)) for r in children)
    resumed = [o for o in jobs_of(parent) if o.outcome == "resumed"]
    assert [o.run_id for o in resumed] == [victim.info.run_id]  # the same run, continued from its checkpoint


def test_the_fault_benchmark_at_24_jobs_lands_every_job_once_and_the_racing_pair_too(server, tmp_path, real_data_root):
    """benchmarks/cluster_faults.py, small: 2 tasks requeued and 2 training processes SIGKILLed, then two identical 12-job sweeps at once."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "cluster_faults.py"
    done = subprocess.run([sys.executable, str(script), "--jobs", "24", "--faults", "0.1", "--race-jobs", "12", "--work", str(tmp_path), "--out", str(tmp_path / "faults.md")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    for phase, jobs in (("faulted sweep", 24), ("racing pair", 12)):
        f = figures[phase]
        assert (f["landed once"], f["landed twice or more"], f["duplicated or missing epochs"]) == (jobs, 0, 0), f
        assert f["runs RUNNING"] == 0 and f["parents not FINISHED"] == 0, f
    assert figures["faulted sweep"]["exit"] == 0 and figures["racing pair"]["exits"] == [0, 0]
    assert figures["racing pair"]["jobs raced"] >= 3, figures["racing pair"]  # side by side: the two really met on jobs
    delivered = figures["faulted sweep"]["faults delivered"]
    assert delivered.get("kill", 0) + delivered.get("requeue", 0) >= 2, delivered  # at least half of the 4 planned faults landed
    text = (tmp_path / "faults.md").read_text()
    assert "| faulted sweep | 24/24 |" in text and "| racing pair | 12/12 |" in text and "each array 1 task(s) at a time" in text
    assert "python benchmarks/cluster_faults.py --jobs 24 --faults 0.1 --race-jobs 12 --out" in text and "--work" not in text
