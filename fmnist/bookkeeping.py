"""Which run a job is: skip it, resume it, or start it; one owner at a time; how it ends.

What to do is a pure function of values (`decide`): the job's runs in the store (ledger records), the
export that holds it, and the checkpoint on disk. `Bookkeeping` gathers those values, one query of the
store and one look at the files, and carries the decision out: a job whose configuration finished is
skipped; otherwise it takes the lease on its fingerprint, then resumes the run its checkpoint belongs to
or starts a new one. A checkpoint is deleted when its run finishes or its configuration is bad (a user
error, a diverging loss), never after a transient failure, so the next attempt resumes.
"""

import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fmnist import checkpoint
from fmnist.config import RunSpec
from fmnist.device import Hardware
from fmnist.engine import Diverged
from fmnist.errors import NoSpace, UserError
from fmnist.identity import git_commit, is_semantic, run_params, settings_id
from fmnist.lease import Busy, Lease, LeaseLost
from fmnist.ledger import JobLine, RunFacts, Trial
from fmnist.results import exported_runs
from fmnist.study import StudyConfig, override_key, readings, record
from fmnist.sweep import varying_name
from fmnist.tracking import RunRecord, TrackedRun, Tracker, resolve_uri

OWNER_WAIT = 7 * 24 * 3600.0  # a sweep's job waits this long for a live copy of it (in another launch) to end


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM, as Slurm and submitit send before a kill)."""


@dataclass
class Launch:
    """What the launcher knows that the config does not."""

    overrides: list[str]  # the command line's overrides, as Hydra parsed them (without the sweeper's launch.*)
    sweep_id: str  # shared by every job of one multirun
    base_dir: Path  # the folder the command was started in; relative paths are taken from it
    default_threads: int | None = None  # torch threads when the config leaves `threads` unset
    config_args: list[str] = field(default_factory=list)  # what found the config (--config-dir, hydra.searchpath=...)
    job_num: int | None = None  # the job's number within its sweep; None for a single run
    parent_run_id: str | None = None  # its sweep's parent run
    varying: list[str] = field(default_factory=list)  # the keys that differ between the sweep's jobs


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_name(overrides: list[str]) -> str:
    """The overrides that change what the run computes, e.g. `loss=mse model=mlp` (a search's sampled numbers to 3 digits)."""
    semantic = [short_override(o) for o in overrides if is_semantic(override_key(o))]
    return " ".join(semantic) if semantic else "defaults"


def short_override(override: str) -> str:
    """`optimizer.lr=0.00207614104200153` as `optimizer.lr=0.00208`: a name to read, not to rerun (the params hold the value)."""
    key, _, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return f"{key}={number:.3g}" if "." in value and len(value) > 6 else override


def sweep_command(overrides: list[str], study: StudyConfig) -> list[str]:
    """The sweep's own overrides: without the seed and what the study sweeper added for this job."""
    added = {o for cell in study.readings for o in study.level(cell).overrides}
    return [o for o in overrides if o not in added and override_key(o) != "seed" and not override_key(o).startswith("study.")]


@dataclass
class TrialOutcome:
    """What a search's trial returns to its sweeper: how it ended, and the run that holds its validation curve."""

    trial: int
    state: str  # complete or pruned
    run_id: str


# ----- what to do: a pure function of values -----


@dataclass(frozen=True)
class Job:
    """A job as the decision sees it."""

    fingerprint: str
    force: bool = False  # train even if an identical run finished (no skip, no resume)
    rerun_on_code_change: bool = False  # a run made by other code does not count as this job done
    commit: str = ""  # the code running now
    trial: int | None = None  # a search's trial number


@dataclass(frozen=True)
class Skip:
    """A finished run stands for this job."""

    run_id: str
    outcome: "float | TrialOutcome | None"  # what the job returns: its test accuracy, or a search trial's outcome
    where: str  # "the store" or an export file
    line: str  # what is said


@dataclass(frozen=True)
class Resume:
    saved: checkpoint.Checkpoint


@dataclass(frozen=True)
class Start:
    discard: str = ""  # why the checkpoint on disk is deleted unused ("": none, or it stays)


def finished(job: Job, runs: list[RunRecord], exported: tuple[Path, str] | None) -> Skip | None:
    """The finished run that makes this job unnecessary, if any: the latest in the store, else one in an export."""
    if job.force:
        return None
    done = [r for r in runs if r.status == "FINISHED"]
    if done and not (job.rerun_on_code_change and done[-1].facts.commit != job.commit):
        run = done[-1]
        state = ((run.facts.trial.state if run.facts.trial else "") or "complete").lower()
        outcome = run.metrics.get("test/acc") if job.trial is None else TrialOutcome(job.trial, state, run.run_id)
        line = f"skipping: this configuration already finished as run {run.run_id} (in the store)"
        if run.facts.commit and run.facts.commit != job.commit:
            line += f", made by commit {run.facts.commit[:12]} (this is {job.commit[:12]}; rerun_on_code_change=true trains it again)"
        return Skip(run.run_id, outcome, "the store", line + "; force=true runs it again")
    if exported:
        line = f"skipping: this configuration already finished as run {exported[1]} (in {exported[0]}); force=true runs it again"
        return Skip(exported[1], None, str(exported[0]), line)
    return None


def decide(job: Job, runs: list[RunRecord], exported: tuple[Path, str] | None, saved: checkpoint.Checkpoint | None) -> Skip | Resume | Start:
    """Skip, resume or start, for the lease's owner: a checkpoint resumes only a run the store has as unfinished."""
    skip = finished(job, runs, exported)
    if skip is not None:
        return skip
    if saved is None or job.force:
        return Start()
    if saved.fingerprint != job.fingerprint:
        return Start("it belongs to another configuration")
    status = next((r.status for r in runs if r.run_id == saved.run_id), None)
    if status in ("RUNNING", "KILLED", "FAILED"):
        return Resume(saved)
    return Start(f"its checkpoint belongs to a run that is {status or 'gone'}")


# ----- carrying it out -----


class Bookkeeping:
    """One job's record keeping: its store, its facts, its lease and checkpoint files."""

    def __init__(self, spec: RunSpec, launch: Launch):
        settings, self.launch = spec.settings, launch
        self.job = Job(spec.fingerprint, settings.force, settings.rerun_on_code_change, git_commit(), settings.search.trial)
        self.tracker = Tracker(resolve_uri(settings.tracking.uri, launch.base_dir), settings.tracking.experiment)
        folder = Path(launch.base_dir, settings.checkpoint_dir)
        self.checkpoint_path = folder / f"{self.job.fingerprint}.pt"
        # A requeued Slurm job may start before its old process's lease goes stale: it waits that out.
        requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
        self.lease = Lease(folder / f"{self.job.fingerprint}.lease", stale_after=settings.lease_seconds,
                           wait=settings.lease_seconds + 5 if requeued else 0)
        self.exports = [Path(launch.base_dir, p) for p in settings.exports if p.endswith(".csv")]  # run exports: finished runs
        self.parent = self.tracker.handle(launch.parent_run_id) if launch.parent_run_id and launch.job_num is not None else None
        self.facts = identity_facts(spec, launch, self.job)
        self.name = name_of(launch, settings)
        self.params = run_params(spec.values)
        self.closed = False  # the job's end is recorded
        self.began = time.monotonic()  # for the line a person reads when the job ends

    def hold(self) -> Lease:
        """The job's lease, taken. While a live process trains this job: a single run stops, naming it; a job of a sweep
        (a launch of the same sweep racing this one) waits for that owner to end, then skips its run or takes over."""
        try:
            self.lease.acquire()
        except Busy as err:
            if self.parent is None:
                raise
            say(f"{str(err).split('; ')[0]}; as a job of a sweep, this copy waits for it to end, then skips its run or takes over")
            self.lease.wait = OWNER_WAIT
            self.lease.acquire()
        return self.lease

    def begin(self) -> Skip | None:
        """Before the lease: a finished run that stands for this job, recorded as its outcome; None: go on."""
        step = self._look(owner=False)
        return step if isinstance(step, Skip) else None

    def take(self, fits, hardware: Hardware) -> Skip | tuple[TrackedRun, checkpoint.Checkpoint | None]:
        """The lease's owner: skip (a copy finished meanwhile), or the run to train and the checkpoint it resumes from.
        `fits(saved)` says why a checkpoint cannot continue this code's run (None if it can)."""
        step = self._look(owner=True)
        if isinstance(step, Skip):
            return step
        if isinstance(step, Resume) and (problem := fits(step.saved)):
            say(f"warning: {problem}; it is deleted and the job starts afresh in a new run")
            self.checkpoint_path.unlink(missing_ok=True)
            step = Start()
        return self._open(step, hardware), step.saved if isinstance(step, Resume) else None

    def _look(self, owner: bool) -> Skip | Resume | Start:
        """What to do now (said on stderr): before the lease only a skip is decided; its owner also resumes or starts."""
        runs = self.tracker.job_runs(self.job.fingerprint)
        exported = exported_runs(self.exports).get(self.job.fingerprint)
        saved = self._checkpoint() if owner else None
        step = decide(self.job, runs, exported, saved) if owner else finished(self.job, runs, exported) or Start()
        if isinstance(step, Skip):
            say(step.line)
            self.record("skipped", step.run_id, where=step.where)
        elif isinstance(step, Start) and step.discard:
            say(f"warning: {self.checkpoint_path}: {step.discard}; starting afresh")
            self.checkpoint_path.unlink(missing_ok=True)
        return step

    def _checkpoint(self) -> checkpoint.Checkpoint | None:
        path = self.checkpoint_path
        for partial in checkpoint.clean_partials(path):  # this process holds the lease: nobody else is writing
            say(f"removed {partial.name}, left by an interrupted checkpoint write")
        if not path.exists():
            return None
        try:
            return checkpoint.load(path)
        except checkpoint.CheckpointError as err:
            say(f"warning: {err}; starting afresh")
            path.unlink()
            return None

    def record(self, outcome: str, run_id: str | None = None, reason: str = "", where: str = "") -> None:
        """This job's line in its sweep's parent run: trained, resumed, skipped (and which run stands for it), failed."""
        if self.parent is None:
            return
        say(f"job {self.launch.job_num} of the sweep ({self.name}): {outcome} after {(time.monotonic() - self.began) / 60:.1f} min")
        try:
            self.parent.record_job(JobLine(self.launch.job_num, shlex.join(self.launch.overrides), outcome, run_id, reason, where))
        except Exception as err:  # the record is for people; never let it fail the job
            say(f"warning: could not record this job in its sweep's parent run ({type(err).__name__})")

    def _open(self, step: Resume | Start, hardware: Hardware) -> TrackedRun:
        """Reopen the run being resumed, or start a new one with its params and facts; close every other unfinished run
        of the job. Only the lease's owner gets here, so any other RUNNING run of this fingerprint, on whatever host, is an
        orphan: a copy killed before its first checkpoint, or a run the store created twice."""
        where = where_facts(hardware) | RunFacts(parent_run_id=self.parent.run_id if self.parent else None, sweep_id=self.launch.sweep_id)
        if isinstance(step, Resume):
            say(f"resuming run {step.saved.run_id} after epoch {step.saved.epoch}")
            run = self.tracker.reopen(step.saved.run_id, where)
        else:
            run = self._start(self.facts | where | RunFacts(attempt=self.lease.me.token))
        for other in self.tracker.job_runs(self.job.fingerprint):
            if other.run_id != run.run_id and other.status != "FINISHED" and other.facts.superseded_by != run.run_id:
                closing = self.tracker.handle(other.run_id)
                closing.add(RunFacts(superseded_by=run.run_id))
                if other.status == "RUNNING":
                    closing.fail(f"superseded by run {run.run_id}, which holds this job now", killed=True)
        return run

    def _start(self, facts: RunFacts) -> TrackedRun:
        """A new run, made once: if the store committed it but its answer was lost, the run is found by this attempt's token."""
        try:
            return self.tracker.start_run(self.name, self.params, facts)
        except Exception:
            found = self.tracker.attempt_run(facts.attempt)
            if found is None:
                raise
            run = self.tracker.handle(found.run_id)
            run.log_params(self.params)
            return run

    def close(self, run: TrackedRun | None, err: BaseException | None, resumed: bool = False, pruned: str = "") -> None:
        """How the run ended, and the job's line in its sweep: the checkpoint stays unless the run finished or its config
        is bad. A search trial the pruner stopped ends FINISHED (it is a result), its state PRUNED with the reason."""
        self.closed = True
        if run is not None:
            self._end(run, err, pruned)
        if isinstance(err, LeaseLost):
            self.record("lost", reason=str(err)[:2000])  # another process holds the job now: not a failure of the job
        elif err is not None:
            self.record("failed", reason=f"{type(err).__name__}: {err}"[:2000])
        else:
            self.record("pruned" if pruned else "resumed" if resumed else "trained", run.run_id)

    def _end(self, run: TrackedRun, err: BaseException | None, pruned: str) -> None:
        if err is None:
            self.lease.check()  # a copy that lost the job does not finish its run
            if self.facts.trial is not None:
                run.end_trial(self.facts.trial, "PRUNED" if pruned else "COMPLETE", pruned)
            run.finish()
            self.checkpoint_path.unlink(missing_ok=True)
        elif isinstance(err, LeaseLost):
            return  # the new owner continues this run: touch nothing
        elif isinstance(err, (KeyboardInterrupt, Terminated)):
            _fail(run, "interrupted (Ctrl-C or SIGTERM); run the same command again to resume", killed=True)
        elif isinstance(err, (UserError, Diverged)) and not isinstance(err, NoSpace):  # they would repeat from the checkpoint
            _fail(run, f"{type(err).__name__}: {err}")
            self.checkpoint_path.unlink(missing_ok=True)
        else:
            _fail(run, f"{type(err).__name__}: {err}; the checkpoint is kept: run the same command again to resume")


def _fail(run: TrackedRun, reason: str, killed: bool = False) -> None:
    try:
        run.fail(reason, killed)
    except Exception as err:  # the store itself may be what failed; the next attempt closes the run
        say(f"warning: could not mark run {run.run_id} as ended ({type(err).__name__}); it stays RUNNING until then")


# ----- a run's facts, name and params -----


def identity_facts(spec: RunSpec, launch: Launch, job: Job) -> RunFacts:
    """What a run of this job is, whenever it is made: identity, code, study record, trial."""
    settings, study = spec.settings, spec.settings.study
    facts = RunFacts(fingerprint=job.fingerprint, settings=settings_id(spec.values), overrides=tuple(launch.overrides),
                     sweep_id=launch.sweep_id, commit=job.commit, study_name=study.name)
    search = settings.search
    if search.trial is not None:
        facts = facts | RunFacts(trial=Trial(search.trial, search.name, search.study))
    if study.name and study.readings:
        facts = facts | RunFacts(study=record(study, [*launch.config_args, *sweep_command(launch.overrides, study)]))
    return facts


def where_facts(hardware: Hardware) -> RunFacts:
    """Where this process trains the run: host, process, device and processor, threads, Slurm job."""
    slurm = None
    if os.environ.get("SLURM_JOB_ID"):
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        slurm = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
    return RunFacts(host=socket.gethostname(), pid=os.getpid(), device=hardware.device, processor=hardware.processor,
                    threads=torch.get_num_threads(), slurm_job=slurm)


def name_of(launch: Launch, settings) -> str:
    """The name a person reads in the runs table (sweep.varying_name); a search's trial: `trial 4 · <the values it drew>`."""
    if settings.search.trial is not None and not settings.study.readings:
        return f"trial {settings.search.trial} · {run_name(launch.overrides)}"
    cells = [r.cell for r in readings(settings.study)]
    varying = launch.varying if not cells or "cell" in launch.varying else ["cell", *launch.varying]  # a study's job: its cell
    return varying_name(launch.overrides, varying, cells) or run_name(launch.overrides)


