"""A sweep is one parent run: the launching process opens it once every job is known valid, each job's run is
its child (whatever launcher runs it), it records each job's outcome, and it ends FINISHED or FAILED by its jobs.
"""

import json
import shlex
from dataclasses import dataclass

from fmnist.identity import git_commit, is_semantic
from fmnist.study import override_key
from fmnist.tracking import (
    FAILED_JOBS_TAG,
    FINGERPRINT_TAG,
    GIT_TAG,
    JOB_TAG,
    LAUNCHER_TAG,
    PARENT_ID_TAG,
    PARENT_TAG,
    STUDY_TAG,
    SWEEP_COMMAND_TAG,
    SWEEP_TAG,
    VARYING_TAG,
    TrackedRun,
    Tracker,
)

SUPERSEDED_TAG = "fmnist.superseded_by"  # on a run of a job that another run now stands for

OPEN_SWEEP: dict = {}  # in the launching process: the tracker, the sweep and (once its jobs are known valid) its parent run


def open_sweep_parent() -> None:
    """Open the multirun's parent run, once, when its sweeper has checked every job (a no-op outside a multirun)."""
    if OPEN_SWEEP and "parent" not in OPEN_SWEEP:
        OPEN_SWEEP["parent"] = open_parent(OPEN_SWEEP["tracker"], OPEN_SWEEP["sweep"])


@dataclass
class Sweep:
    """What the launching process knows about a multirun: it opens the parent run and closes it."""

    sweep_id: str
    command: list[str]  # the overrides as typed, sweeps included (loss=ce,mse,nll)
    varying: list[str]  # the keys whose values differ between the jobs
    launcher: str
    study: str | None


def sweep_name(sweep: Sweep) -> str:
    """`sweep loss=ce,mse,nll model=mlp`: what varies first, then the settings the jobs share."""
    semantic = [o for o in sweep.command if is_semantic(override_key(o)) or override_key(o) == "study"]
    first = [o for o in semantic if override_key(o) in sweep.varying]
    return " ".join(["sweep", *first, *(o for o in semantic if o not in first)])


def open_parent(tracker: Tracker, sweep: Sweep) -> TrackedRun:
    tags = {
        PARENT_TAG: "1", SWEEP_TAG: sweep.sweep_id, SWEEP_COMMAND_TAG: shlex.join(sweep.command),
        VARYING_TAG: json.dumps(sweep.varying), LAUNCHER_TAG: sweep.launcher, GIT_TAG: git_commit(),
    }
    if sweep.study:
        tags[STUDY_TAG] = sweep.study
    return tracker.start_run(sweep_name(sweep), {}, tags)


def close_parent(tracker: Tracker, parent: TrackedRun, interrupted: bool, raised: bool) -> None:
    """FINISHED when every job finished or was skipped; else FAILED, saying how many jobs failed."""
    record = tracker.get(parent.run_id)
    outcomes = [json.loads(v) for k, v in record.tags.items() if k.startswith(JOB_TAG)] if record else []
    failed = [o for o in outcomes if o["outcome"] == "failed"]
    # Jobs, not runs: a job whose run another run superseded, or that finished in another run, did not fail.
    children = tracker.runs(f"tags.`{PARENT_ID_TAG}` = '{parent.run_id}'")
    finished = {r.tags.get(FINGERPRINT_TAG) for r in children if r.status == "FINISHED"}
    unfinished = {r.tags.get(FINGERPRINT_TAG) for r in children if r.status != "FINISHED" and SUPERSEDED_TAG not in r.tags} - finished
    count = max(len(failed), len(unfinished), 1 if raised else 0)
    if interrupted:
        parent.fail(f"interrupted after {len(outcomes)} job(s) ended", killed=True)
    elif count:
        parent.set_tags({FAILED_JOBS_TAG: str(count)})
        parent.fail(f"{count} of {max(len(outcomes), count)} job(s) failed")
    else:
        parent.finish()


def varying_name(overrides: list[str], varying: list[str], cells: list[str]) -> str:
    """A child's name: the overrides that differ between the sweep's jobs (`loss=mse`, `cell=sgd seed=2`)."""
    parts = [f"cell={cells[-1]}"] if cells and "cell" in varying else []
    parts += [o for o in overrides if override_key(o) in varying]
    if len(cells) > 1 and "cell" in varying:
        parts.append(f"(also {', '.join(cells[:-1])})")
    return " ".join(parts)
