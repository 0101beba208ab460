"""Which run a job is: skip it, resume it, or start it; one owner at a time; how it ends.

Every decision is taken before a run is created or touched: a job whose configuration finished
(in the store, or in a committed export) is skipped; otherwise it takes the lease on its
fingerprint, then resumes the run its checkpoint belongs to or starts a new one. A checkpoint is
deleted when its run finishes or its configuration is bad (a user error, a diverging loss), never
after a transient failure, so the next attempt resumes.
"""

import json
import os
import shlex
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fmnist import checkpoint
from fmnist.config import RunSpec
from fmnist.engine import Diverged
from fmnist.errors import UserError
from fmnist.identity import applied, flatten, git_commit, is_semantic, settings_id
from fmnist.lease import Lease, LeaseLost
from fmnist.results import exported_runs
from fmnist.study import StudyConfig, override_key, readings, record
from fmnist.sweep import SUPERSEDED_TAG, varying_name
from fmnist.tracking import (
    FINGERPRINT_TAG,
    GIT_TAG,
    JOB_TAG,
    OVERRIDES_TAG,
    PARENT_ID_TAG,
    SETTINGS_TAG,
    STUDY_TAG,
    SWEEP_TAG,
    VARYING_TAG,
    RunRecord,
    TrackedRun,
    Tracker,
    record_tags,
    resolve_uri,
)

HOST_TAG, PID_TAG = "fmnist.host", "fmnist.pid"
TRIAL_TAG, TRIAL_STATE_TAG = "fmnist.trial", "fmnist.trial_state"  # a search's trial number, and COMPLETE or PRUNED
ATTEMPT_TAG = "fmnist.attempt"  # the lease token of the process that created the run: found again if the store's answer is lost
SLURM_TAG = "fmnist.slurm_job"  # the Slurm job (array_task) that last ran the run


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM, as Slurm and submitit send before a kill)."""


@dataclass
class Launch:
    """What the launcher knows that the config does not."""

    overrides: list[str]  # the command line's overrides, as Hydra parsed them
    sweep_id: str  # shared by every job of one multirun
    base_dir: Path  # the folder the command was started in; relative paths are taken from it
    default_threads: int | None = None  # torch threads when the config leaves `threads` unset
    config_args: list[str] = field(default_factory=list)  # what found the config (--config-dir, hydra.searchpath=...)
    job_num: int | None = None  # the job's number within its sweep; None for a single run


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


def fingerprint_filter(fp: str) -> str:
    return f"tags.`{FINGERPRINT_TAG}` = '{fp}'"


@dataclass
class Skip:
    """A finished run that stands for this job."""

    run_id: str
    outcome: "float | TrialOutcome | None"  # what the job returns: its test accuracy, or a search trial's outcome
    where: str  # "the store" or an export file


@dataclass
class TrialOutcome:
    """What a search's trial returns to its sweeper: how it ended, and the run that holds its validation curve."""

    trial: int
    state: str  # complete or pruned
    run_id: str


class Bookkeeping:
    """One job's record keeping: its store, its fingerprint, its lease and checkpoint files."""

    def __init__(self, spec: RunSpec, launch: Launch):
        self.values, self.settings, self.launch, self.fp = spec.values, spec.settings, launch, spec.fingerprint
        settings, fp = spec.settings, self.fp
        self.tracker = Tracker(resolve_uri(settings.tracking.uri, launch.base_dir), settings.tracking.experiment)
        folder = Path(launch.base_dir, settings.checkpoint_dir)
        self.checkpoint_path = folder / f"{fp}.pt"
        # A requeued Slurm job may start before its old process's lease goes stale: it waits that out.
        requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
        self.lease = Lease(folder / f"{fp}.lease", stale_after=settings.lease_seconds, wait=settings.lease_seconds + 5 if requeued else 0)
        self.parent = self.tracker.parent(launch.sweep_id) if launch.job_num is not None else None

    def record(self, outcome: str, run_id: str | None = None, **more: str) -> None:
        """This job's line in its sweep's parent run: trained, resumed, skipped (and which run stands for it), failed."""
        if self.parent is None:
            return
        entry = {"overrides": shlex.join(self.launch.overrides), "outcome": outcome, "run_id": run_id, **more}
        try:
            self.tracker.handle(self.parent.run_id).set_tags({f"{JOB_TAG}{self.launch.job_num:04d}": json.dumps(entry)[:7900]})
        except Exception as err:  # the record is for people; never let it fail the job
            say(f"warning: could not record this job in its sweep's parent run ({type(err).__name__})")

    def finished(self) -> Skip | None:
        """The finished run that makes this job unnecessary, if any (said on stderr)."""
        if self.settings.force:
            return None
        done = [r for r in self.tracker.runs(fingerprint_filter(self.fp)) if r.status == "FINISHED"]
        if done and not self._code_changed(done[-1]):
            run = done[-1]
            trial = self.settings.search.trial
            outcome = run.metrics.get("test/acc") if trial is None else TrialOutcome(trial, run.tags.get(TRIAL_STATE_TAG, "complete"), run.run_id)
            return self._skip(Skip(run.run_id, outcome, "the store"), run)
        exported = exported_runs([Path(self.launch.base_dir, p) for p in self.settings.exports]).get(self.fp)
        if exported:
            return self._skip(Skip(exported[1], None, str(exported[0])), None)
        return None

    def _code_changed(self, run: RunRecord) -> bool:
        """With rerun_on_code_change, a run made by other code does not count as this job done."""
        return self.settings.rerun_on_code_change and run.tags.get(GIT_TAG) != git_commit()

    def _skip(self, skip: Skip, run: RunRecord | None) -> Skip:
        line = f"skipping: this configuration already finished as run {skip.run_id} (in {skip.where})"
        commit = run.tags.get(GIT_TAG, "unknown") if run else None
        if commit and commit != git_commit():
            line += f", made by commit {commit[:12]} (this is {git_commit()[:12]}; rerun_on_code_change=true trains it again)"
        say(line + "; force=true runs it again")
        return skip

    def resumable(self) -> checkpoint.Checkpoint | None:
        """The checkpoint of an unfinished run of this configuration, if one is on disk."""
        path = self.checkpoint_path
        for partial in checkpoint.clean_partials(path):  # this process holds the lease: nobody else is writing
            say(f"removed {partial.name}, left by an interrupted checkpoint write")
        if self.settings.force or not path.exists():
            return None
        try:
            found = checkpoint.load(path, self.fp)
        except checkpoint.CheckpointError as err:
            say(f"warning: {err}; starting afresh")
            path.unlink()
            return None
        status = self.tracker.status(found.run_id)
        if status in ("RUNNING", "KILLED", "FAILED"):
            return found
        say(f"warning: checkpoint {path} belongs to a run that is {status or 'gone'}; starting afresh")
        path.unlink()
        return None

    def open_run(self, resume: checkpoint.Checkpoint | None, device: torch.device) -> TrackedRun:
        """Reopen the run being resumed, or start a new one with its params and tags; close every other unfinished run of the job.

        Only the lease's owner gets here, so any other RUNNING run of this fingerprint, on whatever host, is an
        orphan: a copy killed before its first checkpoint, or a run the store created twice.
        """
        tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), "fmnist.device": str(device),
                "fmnist.threads": str(torch.get_num_threads())}
        if os.environ.get("SLURM_JOB_ID"):
            array = os.environ.get("SLURM_ARRAY_JOB_ID")
            tags[SLURM_TAG] = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
        if self.parent is not None:
            tags |= {PARENT_ID_TAG: self.parent.run_id, SWEEP_TAG: self.launch.sweep_id}  # a resumed run joins this sweep
        if resume:
            say(f"resuming run {resume.run_id} after epoch {resume.epoch}")
            run = self.tracker.reopen(resume.run_id)
            run.set_tags(tags)
        else:
            run = self._start(tags | self._tags())
        self._close_others(run.run_id)
        return run

    def _start(self, tags: dict[str, str]) -> TrackedRun:
        """A new run, made once: if the store committed it but its answer was lost, the run is found by this attempt's tag."""
        attempt = {ATTEMPT_TAG: self.lease.me.token}
        try:
            return self.tracker.start_run(self._name(), self._params(), tags | attempt)
        except Exception:
            found = self.tracker.runs(f"tags.`{ATTEMPT_TAG}` = '{attempt[ATTEMPT_TAG]}'")
            if not found:
                raise
            run = self.tracker.handle(found[0].run_id)
            run.log_params(self._params())
            return run

    def _close_others(self, keep: str) -> None:
        for other in self.tracker.runs(fingerprint_filter(self.fp)):
            if other.run_id != keep and other.status != "FINISHED" and other.tags.get(SUPERSEDED_TAG) != keep:
                closing = self.tracker.handle(other.run_id)
                closing.set_tags({SUPERSEDED_TAG: keep})
                if other.status == "RUNNING":
                    closing.fail(f"superseded by run {keep}, which holds this job now", killed=True)

    def _name(self) -> str:
        varying = json.loads(self.parent.tags.get(VARYING_TAG, "[]")) if self.parent else []
        cells = [r.cell for r in readings(self.settings.study)]
        return varying_name(self.launch.overrides, varying, cells) or run_name(self.launch.overrides)

    def _params(self) -> dict[str, object]:
        """The flattened config; of the study node only what places the run (its name and readings)."""
        flat = applied(flatten(self.values))
        keep = ("study.name", "search.name", "search.trial")
        return {k: v for k, v in flat.items() if not k.startswith(("study.", "search.")) or is_semantic(k) or k in keep}

    def _tags(self) -> dict[str, str]:
        study: StudyConfig = self.settings.study
        tags = {
            SWEEP_TAG: self.launch.sweep_id,
            FINGERPRINT_TAG: self.fp,
            SETTINGS_TAG: settings_id(self.values),
            OVERRIDES_TAG: shlex.join(self.launch.overrides),
            GIT_TAG: git_commit(),
        }
        search = self.settings.search
        if search.trial is not None:
            tags |= {TRIAL_TAG: str(search.trial), "fmnist.search": search.name, "fmnist.optuna_study": search.study}
        if study.name and study.readings:
            tags |= record_tags(record(study, [*self.launch.config_args, *sweep_command(self.launch.overrides, study)]))
        elif study.name:
            tags[STUDY_TAG] = study.name
        return tags

    def ended(self, run: TrackedRun, err: BaseException | None, pruned: str = "") -> None:
        """Record how the run ended; keep the checkpoint unless the run finished or its config is bad.

        A search trial the pruner stopped ends FINISHED (it is a result), tagged PRUNED with the reason.
        """
        if err is None:
            self.lease.check()  # a copy that lost the job does not finish its run
            if self.settings.search.trial is not None:
                run.set_tags({TRIAL_STATE_TAG: "PRUNED" if pruned else "COMPLETE", **({"mlflow.note.content": pruned} if pruned else {})})
            run.finish()
            self.checkpoint_path.unlink(missing_ok=True)
        elif isinstance(err, LeaseLost):
            return  # the new owner continues this run: touch nothing
        elif isinstance(err, (KeyboardInterrupt, Terminated)):
            self._fail(run, "interrupted (Ctrl-C or SIGTERM); run the same command again to resume", killed=True)
        elif self._config_is_bad(err):
            self._fail(run, f"{type(err).__name__}: {err}")
            self.checkpoint_path.unlink(missing_ok=True)
        else:
            self._fail(run, f"{type(err).__name__}: {err}; the checkpoint is kept: run the same command again to resume")

    @staticmethod
    def _fail(run: TrackedRun, reason: str, killed: bool = False) -> None:
        try:
            run.fail(reason, killed)
        except Exception as err:  # the store itself may be what failed; the next attempt closes the run
            say(f"warning: could not mark run {run.run_id} as ended ({type(err).__name__}); it stays RUNNING until then")

    @staticmethod
    def _config_is_bad(err: BaseException) -> bool:
        """Failures that would repeat themselves from the checkpoint: bad input, a diverging loss."""
        return isinstance(err, (UserError, Diverged))
