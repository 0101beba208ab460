"""What a job does, decided from values alone: no store, no Hydra. The job's runs as the store would give them (ledger
records), the export that holds it, the checkpoint on disk: skip, resume or start, and why."""

from pathlib import Path

import pytest

from fmnist.bookkeeping import Job, Resume, Skip, Start, TrialOutcome, decide, finished
from fmnist.checkpoint import Checkpoint
from fmnist.ledger import RunFacts, Trial
from fmnist.sweep import varying_name
from fmnist.tracking import RunRecord

FP, COMMIT = "a1b2c3d4e5f60718", "c" * 40


def run(run_id: str, status: str, commit: str = COMMIT, acc: float = 0.9, trial: Trial | None = None) -> RunRecord:
    return RunRecord(run_id, run_id, status, {}, {"test/acc": acc}, 0, RunFacts(fingerprint=FP, commit=commit, trial=trial))


def saved(run_id: str, fingerprint: str = FP) -> Checkpoint:
    return Checkpoint(run_id, fingerprint, 2, [], {}, {}, None, None)


JOB = Job(FP, commit=COMMIT)


def test_the_latest_finished_run_stands_for_the_job():
    step = finished(JOB, [run("old", "FINISHED", acc=0.8), run("new", "FINISHED", acc=0.9), run("dead", "FAILED")], None)
    assert isinstance(step, Skip) and step.run_id == "new" and step.outcome == 0.9 and step.where == "the store"
    assert "force=true runs it again" in step.line and "made by commit" not in step.line


def test_force_and_code_changes_decide_whether_a_finished_run_counts():
    other = [run("r", "FINISHED", commit="d" * 40)]
    assert "made by commit dddddddddddd" in finished(JOB, other, None).line  # it counts, and the line says whose code
    assert finished(Job(FP, rerun_on_code_change=True, commit=COMMIT), other, None) is None
    assert finished(Job(FP, force=True, commit=COMMIT), [run("r", "FINISHED")], None) is None


def test_an_exported_run_stands_for_the_job_when_the_store_has_none():
    step = finished(JOB, [run("dead", "FAILED")], (Path("results/table2/runs/mlp.csv"), "r-exported"))
    assert isinstance(step, Skip) and step.run_id == "r-exported" and step.where == "results/table2/runs/mlp.csv" and step.outcome is None


def test_a_trials_outcome_keeps_its_state():
    pruned = run("t", "FINISHED", trial=Trial(4, "s", "st", "PRUNED"))
    step = finished(Job(FP, commit=COMMIT, trial=4), [pruned], None)
    assert step.outcome == TrialOutcome(4, "pruned", "t")


@pytest.mark.parametrize("status,expected", [("RUNNING", Resume), ("KILLED", Resume), ("FAILED", Resume), ("FINISHED", Skip),
                                             (None, Start)])
def test_a_checkpoint_resumes_only_a_run_the_store_has_unfinished(status, expected):
    runs = [run("r", status)] if status else []  # None: the store has no such run (deleted, or another store)
    step = decide(JOB, runs, None, saved("r"))
    assert isinstance(step, expected)
    if expected is Start:
        assert step.discard == "its checkpoint belongs to a run that is gone"


def test_a_checkpoint_of_another_configuration_or_under_force_is_not_resumed():
    assert decide(JOB, [run("r", "KILLED")], None, saved("r", "ffffffffffffffff")) == Start("it belongs to another configuration")
    assert decide(Job(FP, force=True, commit=COMMIT), [run("r", "KILLED")], None, saved("r")) == Start()
    assert decide(JOB, [], None, None) == Start()


@pytest.mark.parametrize("overrides,varying,cells,name", [
    (["model=vgg", "optimizer=sgd", "seed=3"], ["cell"], ["sgd"], "sgd · seed 3"),  # a study's cell: five seeds, five names
    (["seed=2"], ["cell"], ["epochs10", "epochs20", "baseline"], "baseline (also epochs10, epochs20) · seed 2"),
    (["seed=12"], ["cell"], ["trial6"], "trial6 · seed 12"),  # a search's confirmation
    (["loss=mse", "seed=0"], ["loss"], [], "loss=mse · seed 0"),
    (["loss=mse"], ["loss"], [], "loss=mse"),  # no seed given: the config's, the same for every job
    (["seed=4"], ["seed"], [], "seed 4"),
    (["loss=mse", "seed=4"], [], [], ""),  # nothing varies: the caller names it by its overrides
])
def test_a_child_run_is_named_by_what_differs_between_the_jobs_and_its_seed(overrides, varying, cells, name):
    assert varying_name(overrides, varying, cells) == name


def test_a_long_description_is_cut_at_a_line_within_mlflows_limit_and_says_so():
    from fmnist.sweep import NOTE_LENGTH, fitted

    short = "# table2: mlp\n| cell |"
    assert fitted(short) == short
    long = "\n".join(f"| row {i} | {'x' * 60} |" for i in range(400))
    cut = fitted(long)
    assert len(cut) <= NOTE_LENGTH and cut.endswith("prints the whole table)") and long.startswith(cut.split("\n\n…")[0] + "\n")
