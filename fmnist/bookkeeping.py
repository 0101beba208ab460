"""Which run a job is: skip it, resume it, or start it; one owner at a time; how it ends.

Every decision is taken before a run is created or touched: a job whose configuration finished
(in the store, or in a committed export) is skipped; otherwise it takes the lease on its
fingerprint, then resumes the run its checkpoint belongs to or starts a new one. A checkpoint is
deleted when its run finishes or its configuration is bad (a user error, a diverging loss), never
after a transient failure, so the next attempt resumes.
"""

import functools
import os
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from fmnist import checkpoint
from fmnist.config import Config, resolved
from fmnist.engine import Diverged
from fmnist.errors import UserError
from fmnist.identity import flatten, is_semantic, settings_id
from fmnist.lease import Lease, LeaseLost
from fmnist.results import exported_runs
from fmnist.study import StudyConfig, override_key, readings
from fmnist.tracking import (
    COMMAND_TAG, FINGERPRINT_TAG, GIT_TAG, OVERRIDES_TAG, SETTINGS_TAG, STUDY_TAG, SWEEP_TAG, RunRecord, TrackedRun, Tracker,
    resolve_uri, study_tags,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOST_TAG, PID_TAG = "fmnist.host", "fmnist.pid"


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


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@functools.cache  # the code running is the code imported at start-up: one look per process, not per job
def git_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{'-dirty' if dirty else ''}" if commit else "unknown"


def run_name(overrides: list[str]) -> str:
    """The overrides that change what the run computes, e.g. `loss=mse model=mlp`."""
    semantic = [o for o in overrides if is_semantic(override_key(o))]
    return " ".join(semantic) if semantic else "defaults"


def sweep_command(overrides: list[str], study: StudyConfig) -> list[str]:
    """The sweep's own overrides: without the seed and what the study sweeper added for this job."""
    added = {o for cell in study.readings for o in study.level(cell).overrides}
    return [o for o in overrides if o not in added and override_key(o) != "seed" and not override_key(o).startswith("study.")]


def fingerprint_filter(fp: str) -> str:
    return f"tags.`{FINGERPRINT_TAG}` = '{fp}'"


def process_alive(run: RunRecord) -> bool:
    """False only when the run's process is known to be gone (same host, no such pid)."""
    if run.tags.get(HOST_TAG) != socket.gethostname() or not run.tags.get(PID_TAG, "").isdigit():
        return True
    try:
        os.kill(int(run.tags[PID_TAG]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Skip:
    """A finished run that stands for this job."""

    run_id: str
    test_acc: float | None
    where: str  # "the store" or an export file


class Bookkeeping:
    """One job's record keeping: its store, its fingerprint, its lease and checkpoint files."""

    def __init__(self, cfg: DictConfig, settings: Config, launch: Launch, fp: str):
        self.cfg, self.settings, self.launch, self.fp = cfg, settings, launch, fp
        self.tracker = Tracker(resolve_uri(settings.tracking.uri, launch.base_dir), settings.tracking.experiment)
        folder = Path(launch.base_dir, settings.checkpoint_dir)
        self.checkpoint_path = folder / f"{fp}.pt"
        self.lease = Lease(folder / f"{fp}.lease", stale_after=settings.lease_seconds)

    def finished(self) -> Skip | None:
        """The finished run that makes this job unnecessary, if any (said on stderr)."""
        if self.settings.force:
            return None
        done = [r for r in self.tracker.runs(fingerprint_filter(self.fp)) if r.status == "FINISHED"]
        if done and not self._code_changed(done[-1]):
            return self._skip(Skip(done[-1].run_id, done[-1].metrics.get("test/acc"), "the store"), done[-1])
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
        """Reopen the run being resumed, or start a new one with its params and tags; close runs whose process died."""
        keep = resume.run_id if resume else None
        for run in self.tracker.runs(fingerprint_filter(self.fp)):
            if run.status == "RUNNING" and run.run_id != keep and not process_alive(run):
                self.tracker.handle(run.run_id).fail("its process ended without finishing (killed?)", killed=True)
        tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), "fmnist.device": str(device),
                "fmnist.threads": str(torch.get_num_threads())}
        if resume:
            say(f"resuming run {resume.run_id} after epoch {resume.epoch}")
            run = self.tracker.reopen(resume.run_id)
            run.set_tags(tags)
            return run
        return self.tracker.start_run(run_name(self.launch.overrides), self._params(), tags | self._tags())

    def _params(self) -> dict[str, object]:
        """The flattened config; of the study node only what places the run (its name and readings)."""
        flat = flatten(resolved(self.cfg))
        return {k: v for k, v in flat.items() if not k.startswith("study.") or is_semantic(k) or k == "study.name"}

    def _tags(self) -> dict[str, str]:
        study: StudyConfig = self.settings.study
        tags = {
            SWEEP_TAG: self.launch.sweep_id,
            FINGERPRINT_TAG: self.fp,
            SETTINGS_TAG: settings_id(resolved(self.cfg)),
            OVERRIDES_TAG: shlex.join(self.launch.overrides),
            GIT_TAG: git_commit(),
        }
        if study.name:
            tags[STUDY_TAG] = study.name
            tags[COMMAND_TAG] = shlex.join([*self.launch.config_args, *sweep_command(self.launch.overrides, study)])
        if study.readings:
            choice = {"levels": study.choice.levels, "reference_acc": study.choice.reference_acc}
            tags |= study_tags(readings(study), choice, study.margin)
        return tags

    def ended(self, run: TrackedRun, err: BaseException | None) -> None:
        """Record how the run ended; keep the checkpoint unless the run finished or its config is bad."""
        if err is None:
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
