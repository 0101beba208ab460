"""A sweep is one parent run, owned by the process that launches it: opened once every job is known valid,
each job's run its child (whatever launcher runs it), each job's outcome recorded on it, and closed FINISHED
or FAILED by how its jobs ended. The launching process holds the `Sweep`; each job learns its sweep from the
`launch.*` values the sweeper gives it (`job_overrides`), so nothing passes through globals or the environment.
"""

import hashlib
import time

from fmnist.identity import git_commit, is_semantic
from fmnist.ledger import SweepFacts
from fmnist.study import override_key
from fmnist.tracking import TrackedRun, Tracker


def new_sweep_id() -> str:
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{hashlib.sha1(str(time.time_ns()).encode()).hexdigest()[:6]}"


class Sweep:
    """One launch of a multirun, in the process that launches it."""

    def __init__(self, tracker: Tracker, command: list[str], varying: list[str], launcher: str, study: str | None):
        self.tracker = tracker
        self.facts = SweepFacts(new_sweep_id(), tuple(command), tuple(varying), launcher, study, git_commit())
        self.parent: TrackedRun | None = None

    def open(self) -> None:
        """The parent run, once, when the sweeper has checked every job (bad input leaves no run behind)."""
        if self.parent is None:
            self.parent = self.tracker.open_parent(sweep_name(self.facts), self.facts)

    def job_overrides(self) -> list[str]:
        """What each job is told of its sweep (config `launch`: not part of what a run computes)."""
        varying = ",".join(f"'{key}'" for key in self.facts.varying)
        parent = [f"launch.parent_run_id={self.parent.run_id}"] if self.parent else []
        return [f"launch.sweep_id={self.facts.sweep_id}", *parent, f"launch.varying=[{varying}]"]

    def close(self, interrupted: bool, raised: bool) -> None:
        """FINISHED when every job finished or was skipped; else FAILED (KILLED if interrupted), saying how many failed."""
        if self.parent is None:
            return
        record = self.tracker.get(self.parent.run_id)
        lines = record.jobs if record else ()
        failed = [line for line in lines if line.outcome == "failed"]
        # Jobs, not runs: a job whose run another run superseded, or that finished in another run, did not fail.
        children = self.tracker.children(self.parent.run_id)
        finished = {r.facts.fingerprint for r in children if r.status == "FINISHED"}
        unfinished = {r.facts.fingerprint for r in children if r.status != "FINISHED" and not r.facts.superseded_by} - finished
        count = max(len(failed), len(unfinished), 1 if raised else 0)
        if interrupted:
            self.parent.fail(f"interrupted after {len(lines)} job(s) ended", killed=True)
        elif count:
            self.parent.fail(f"{count} of {max(len(lines), count)} job(s) failed", failed_jobs=count)
        else:
            self.parent.finish()


def sweep_name(sweep: SweepFacts) -> str:
    """`sweep loss=ce,mse,nll model=mlp`: what varies first, then the settings the jobs share."""
    semantic = [o for o in sweep.command if is_semantic(override_key(o)) or override_key(o) == "study"]
    first = [o for o in semantic if override_key(o) in sweep.varying]
    return " ".join(["sweep", *first, *(o for o in semantic if o not in first)])


def varying_name(overrides: list[str], varying: list[str], cells: list[str]) -> str:
    """A child's name: the overrides that differ between the sweep's jobs (`loss=mse`, `cell=sgd seed=2`)."""
    parts = [f"cell={cells[-1]}"] if cells and "cell" in varying else []
    parts += [o for o in overrides if override_key(o) in varying]
    if len(cells) > 1 and "cell" in varying:
        parts.append(f"(also {', '.join(cells[:-1])})")
    return " ".join(parts)
