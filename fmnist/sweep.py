"""A sweep is one parent run, owned by the process that launches it: opened once every job is known valid,
each job's run its child (whatever launcher runs it), each job's outcome recorded on it, and closed FINISHED
or FAILED by how its jobs ended. The launching process holds the `Sweep`; each job learns its sweep from the
`launch.*` values the sweeper gives it (`job_overrides`), so nothing passes through globals or the environment.

The parent is owned like a job: its launching process holds a lease (fmnist.lease) from before the parent
exists until it is closed, and the parent names the lease. A launch of the same command that finds a parent
still RUNNING whose lease has gone stale (its launcher was killed, its host lost) closes it KILLED, saying
how many of its jobs had finished; a parent whose launcher is alive (a launch racing this one) is left alone.
"""

import hashlib
import logging
import time
from pathlib import Path

from fmnist.errors import UserError
from fmnist.identity import git_commit, is_semantic
from fmnist.lease import Busy, Lease
from fmnist.ledger import JobLine, SweepFacts
from fmnist.study import override_key
from fmnist.tracking import RunRecord, TrackedRun, Tracker

log = logging.getLogger(__name__)


def new_sweep_id() -> str:
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{hashlib.sha1(str(time.time_ns()).encode()).hexdigest()[:6]}"


class Sweep:
    """One launch of a multirun, in the process that launches it."""

    def __init__(self, tracker: Tracker, command: list[str], varying: list[str], launcher: str, study: str | None,
                 lease_folder: Path, lease_seconds: float):
        self.tracker = tracker
        sweep_id = new_sweep_id()
        self.lease = Lease(lease_folder.absolute() / f"sweep-{sweep_id}.lease", stale_after=lease_seconds)
        self.facts = SweepFacts(sweep_id, tuple(command), tuple(varying), launcher, study, git_commit(), str(self.lease.path))
        self.parent: TrackedRun | None = None
        self.summary = ""  # what a person should know of a sweep that finished (jobs cancelled on Slurm)
        self.description = ""  # a study's tables as they stand: the parent's Overview in the MLflow UI

    def open(self) -> None:
        """The parent run, once, when the sweeper has checked every job (bad input leaves no run behind); first the
        lease (so no launch ever sees this parent without it), then the parents that dead launches of this command left."""
        if self.parent is None:
            self.lease.acquire()
            for orphan in self.tracker.parents(running=True):
                if orphan.sweep and orphan.sweep.command == self.facts.command and orphan.sweep.sweep_id != self.facts.sweep_id:
                    self._close_if_dead(orphan)
            self.parent = self.tracker.open_parent(sweep_name(self.facts), self.facts)

    def _close_if_dead(self, orphan: RunRecord) -> None:
        """Close KILLED a parent whose launcher no longer renews its lease (at once if it was a process of this host that
        is gone; else once its heartbeat has stood still for the lease's length). Parents older than the lease, or whose
        lease lies in a folder this host cannot see, are left: nothing here can tell whether their launcher lives."""
        if not orphan.sweep.lease or not Path(orphan.sweep.lease).parent.is_dir():
            return
        theirs = Lease(Path(orphan.sweep.lease), stale_after=self.lease.stale_after)
        try:
            theirs.acquire()
        except (Busy, UserError):
            return  # its launcher is alive: a launch of the same command racing this one
        try:
            if (self.tracker.get(orphan.run_id) or orphan).status != "RUNNING":
                return  # its launcher closed it after all
            children = self.tracker.children(orphan.run_id)
            finished = sum(1 for r in children if r.status == "FINISHED")
            reason = (f"its launch stopped without closing it (no heartbeat on {orphan.sweep.lease}); {finished} of its {len(children)} "
                      f"job run(s) had finished; the same command, launched again as sweep {self.facts.sweep_id}, closed it")
            self.tracker.handle(orphan.run_id).fail(reason, killed=True)
            log.warning(f"closed the parent run {orphan.run_id} of sweep {orphan.sweep.sweep_id}: {reason}")
        finally:
            theirs.release()

    def job_overrides(self) -> list[str]:
        """What each job is told of its sweep (config `launch`: not part of what a run computes)."""
        varying = ",".join(f"'{key}'" for key in self.facts.varying)
        parent = [f"launch.parent_run_id={self.parent.run_id}"] if self.parent else []
        return [f"launch.sweep_id={self.facts.sweep_id}", *parent, f"launch.varying=[{varying}]"]

    def record_failed(self, number: int, overrides: str, reason: str, job: list[str] = ()) -> None:
        """A job that could not record its own outcome (its worker process died): its outcome, and the run its last attempt
        left RUNNING (the job's overrides are the run's) closed FAILED once its lease is taken."""
        if self.parent is None:
            return
        runs = [r for r in self.tracker.children(self.parent.run_id)
                if r.status == "RUNNING" and r.facts.overrides and set(r.facts.overrides) <= set(job)]
        for run in runs:
            self._close_dead(run, overrides, reason, killed=False)
        self.parent.record_job(JobLine(number, overrides, "failed", runs[-1].run_id if runs else None, reason))

    def record_cancelled(self, number: int, overrides: str, reason: str, slurm_job: str) -> None:
        """A job whose Slurm task was cancelled: its outcome, and its run (if it had one) closed KILLED once its lease is
        taken (its process is gone by then, or stopped renewing): nothing it writes later can land."""
        if self.parent is None:
            return
        run = next((r for r in self.tracker.children(self.parent.run_id) if r.facts.slurm_job == slurm_job and r.status == "RUNNING"), None)
        if run is not None:
            self._close_dead(run, overrides, f"{reason}; run the same command again to go on from its checkpoint", killed=True)
        self.parent.record_job(JobLine(number, overrides, "cancelled", run.run_id if run else None, reason))

    def _close_dead(self, run: RunRecord, overrides: str, reason: str, killed: bool) -> None:
        """Close a dead job's RUNNING run, holding its lease meanwhile: a process still renewing it keeps its run."""
        if not run.facts.fingerprint:
            return
        theirs = Lease(self.lease.path.parent / f"{run.facts.fingerprint}.lease", stale_after=self.lease.stale_after,
                       wait=self.lease.stale_after + 5)
        try:
            theirs.acquire()
        except (Busy, UserError) as err:
            log.warning(f"the run {run.run_id} of the job {overrides} is left as it is: {err}")
            return
        try:
            if (self.tracker.get(run.run_id) or run).status == "RUNNING":
                self.tracker.handle(run.run_id).fail(reason, killed=killed)
        finally:
            theirs.release()

    def describe(self, text: str) -> None:
        """The parent's description (its Overview in the UI), e.g. a study's tables after each stage."""
        self.description = text
        if self.parent is not None:
            self.parent.describe(fitted(text))

    def close(self, interrupted: bool, raised: bool) -> None:
        """FINISHED when every job finished or was skipped; else FAILED (KILLED if interrupted), saying how many failed."""
        try:
            self._close(interrupted, raised)
        finally:
            self.lease.release()

    def _close(self, interrupted: bool, raised: bool) -> None:
        if self.parent is None:
            return
        record = self.tracker.get(self.parent.run_id)
        if record is not None and record.status != "RUNNING":
            return  # this launcher was paused past its lease and a later launch closed its parent: leave that be
        lines = record.jobs if record else ()
        failed = [line for line in lines if line.outcome == "failed"]
        cancelled = {line.run_id for line in lines if line.outcome == "cancelled"}  # their own outcome: not a failure
        # Jobs, not runs: a job whose run another run superseded, or that finished in another run, did not fail.
        children = self.tracker.children(self.parent.run_id)
        finished = {r.facts.fingerprint for r in children if r.status == "FINISHED"}
        unfinished = {r.facts.fingerprint for r in children
                      if r.status != "FINISHED" and not r.facts.superseded_by and r.run_id not in cancelled} - finished
        count = max(len(failed), len(unfinished), 1 if raised else 0)
        if interrupted:
            self.parent.fail(f"interrupted after {len(lines)} job(s) ended", killed=True)
        elif count:
            self.parent.fail(f"{count} of {max(len(lines), count)} job(s) failed", failed_jobs=count)
        else:
            self.parent.finish(fitted("\n\n".join(part for part in (self.summary, self.description) if part)))


NOTE_LENGTH = 8000  # what MLflow keeps of a description (it cuts a longer one where it falls)


def fitted(text: str) -> str:
    """A description MLflow keeps whole: past its limit, cut at a line and say where the rest is."""
    if len(text) <= NOTE_LENGTH:
        return text
    rest = "\n\n… (cut here to fit MLflow's description; `python -m fmnist.report` prints the whole table)"
    return text[: text.rfind("\n", 0, NOTE_LENGTH - len(rest))] + rest


def sweep_name(sweep: SweepFacts) -> str:
    """`sweep loss=ce,mse,nll model=mlp`: what varies first, then the settings the jobs share."""
    semantic = [o for o in sweep.command if is_semantic(override_key(o)) or override_key(o) in ("study", "search")]
    first = [o for o in semantic if override_key(o) in sweep.varying]
    return " ".join(["sweep", *first, *(o for o in semantic if o not in first)])


def varying_name(overrides: list[str], varying: list[str], cells: list[str]) -> str:
    """A child's name: what differs between the sweep's jobs, then its seed (`sgd · seed 3`, `loss=mse · seed 0`,
    `baseline (also epochs10, epochs20) · seed 2`); empty where nothing differs."""
    what = [cells[-1], *([f"(also {', '.join(cells[:-1])})"] if len(cells) > 1 else [])] if cells and "cell" in varying else []
    what += [o for o in overrides if override_key(o) in varying and override_key(o) != "seed"]
    seed = next((o.partition("=")[2] for o in overrides if override_key(o) == "seed"), None)
    if seed is None or not (what or "seed" in varying):
        return " ".join(what)
    return " · ".join([*([" ".join(what)] if what else []), f"seed {seed}"])
