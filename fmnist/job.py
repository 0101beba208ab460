"""One job: skip it if an identical run finished, resume it if one was interrupted, else train it.

Called by `fmnist.run` (the Hydra entry point) with the composed config and what the launcher
knows; usable without Hydra from a test or a notebook.
"""

import functools
import os
import shlex
import socket
import subprocess
import sys
import tempfile
from dataclasses import astuple, dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from fmnist import checkpoint, plots
from fmnist.config import Config, fingerprint, resolved, validate
from fmnist.data import DataConfig, Dataset, load_dataset
from fmnist.engine import EpochResult, Evaluation, evaluate, fit
from fmnist.errors import ConfigError
from fmnist.identity import flatten, is_semantic, settings_id
from fmnist.losses import build_loss
from fmnist.metrics import confusion_matrix, per_class_accuracy
from fmnist.models import build_model
from fmnist.optimizers import build_optimizer
from fmnist.results import exported_runs
from fmnist.schedules import build_schedule
from fmnist.study import StudyConfig, override_key, readings
from fmnist.tracking import (
    COMMAND_TAG, FINGERPRINT_TAG, GIT_TAG, OVERRIDES_TAG, SETTINGS_TAG, STUDY_TAG, SWEEP_TAG, RunRecord, Tracker, TrackedRun,
    predictions_name, resolve_uri, study_tags,
)
from fmnist.transforms import build_transform

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
    config_args: list[str] = field(default_factory=list)  # overrides that find the config (hydra.searchpath=...)


def run_name(overrides: list[str]) -> str:
    """The overrides that change what the run computes, e.g. `loss=mse model=mlp`."""
    semantic = [o for o in overrides if is_semantic(o.lstrip("+~").split("=", 1)[0])]
    return " ".join(semantic) if semantic else "defaults"


def sweep_command(overrides: list[str], study: StudyConfig) -> list[str]:
    """The sweep's own overrides: without the seed and what the study sweeper added for this job."""
    added = {o for cell in study.readings for o in study.level(cell).overrides}
    return [o for o in overrides if o not in added and override_key(o) != "seed" and not override_key(o).startswith("study.")]


def pick_device(requested: str) -> torch.device:
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if requested == "auto":
        return torch.device(next(name for name, ok in available.items() if ok))
    if not available[requested]:
        raise ConfigError(f"device={requested} was asked for but none is available here; use device=auto or device=cpu")
    return torch.device(requested)


_loaded: dict[tuple, Dataset] = {}


def dataset(cfg: DataConfig) -> Dataset:
    """The data set, read (and verified) once per process: a sweep's jobs in one process share it.

    Training never writes to the tensors (transforms make new ones), so sharing is safe.
    """
    key = astuple(cfg)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = load_dataset(cfg)
    return _loaded[key]


def check_precision(precision: str, device: torch.device) -> None:
    """bf16 must be supported by the device; on a CPU without native bf16 it runs, slowly, so say so."""
    if precision != "bf16":
        return
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use precision=fp32")
    if device.type == "cpu" and not cpu_has_bf16():
        say("precision=bf16: this CPU has no native bfloat16 instructions, so bf16 will be slower than fp32 here")


def cpu_has_bf16() -> bool:
    try:  # oneDNN's own check (AVX-512 BF16 or AMX on x86); builds without oneDNN have no such op
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


def close_dead_runs(tracker: Tracker, runs: list[RunRecord], keep: str | None) -> None:
    """Runs left RUNNING by a killed process are marked KILLED, except the one being resumed."""
    for run in runs:
        if run.status == "RUNNING" and run.run_id != keep and not process_alive(run):
            tracker.handle(run.run_id).fail("its process ended without finishing (killed?)", killed=True)


def resumable(tracker: Tracker, path: Path, fp: str) -> checkpoint.Checkpoint | None:
    """The checkpoint at `path` if its run was interrupted (RUNNING or KILLED); else None."""
    if not path.exists():
        return None
    try:
        found = checkpoint.load(path, fp)
    except checkpoint.CheckpointError as err:
        say(f"warning: {err}; starting afresh")
        path.unlink()
        return None
    status = tracker.status(found.run_id)
    if status in ("RUNNING", "KILLED"):
        return found
    say(f"warning: checkpoint {path} belongs to a run that is {status or 'gone'}; starting afresh")
    path.unlink()
    return None


def open_run(tracker: Tracker, cfg: DictConfig, settings: Config, launch: Launch, fp: str, device, resume) -> TrackedRun:
    """Reopen the interrupted run being resumed, or start a new one with its params and tags."""
    tags = {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
        "fmnist.device": str(device),
        "fmnist.threads": str(torch.get_num_threads()),
    }
    if resume:
        say(f"resuming run {resume.run_id} after epoch {resume.epoch}")
        run = tracker.reopen(resume.run_id)
        run.set_tags(tags)
        return run
    config = resolved(cfg)
    tags |= {
        SWEEP_TAG: launch.sweep_id,
        FINGERPRINT_TAG: fp,
        SETTINGS_TAG: settings_id(config),
        OVERRIDES_TAG: shlex.join(launch.overrides),
        GIT_TAG: git_commit(),
    }
    study: StudyConfig = settings.study
    if study.name:
        tags[STUDY_TAG] = study.name
        tags[COMMAND_TAG] = shlex.join([*launch.config_args, *sweep_command(launch.overrides, study)])
    if study.readings:
        tags |= study_tags(readings(study), {"levels": study.choice.levels, "reference_acc": study.choice.reference_acc}, study.margin)
    params = {k: v for k, v in flatten(config).items() if not k.startswith("study.") or is_semantic(k) or k == "study.name"}
    return tracker.start_run(run_name(launch.overrides), params, tags)


def execute(cfg: DictConfig, launch: Launch) -> float | None:
    """Validate, then skip, resume or train; log everything. Returns the test accuracy."""
    settings: Config = validate(cfg)
    fp = fingerprint(cfg)
    tracker = Tracker(resolve_uri(settings.tracking.uri, launch.base_dir), settings.tracking.experiment)
    previous = tracker.runs(f"tags.`{FINGERPRINT_TAG}` = '{fp}'")
    done = [r for r in previous if r.status == "FINISHED"]
    if done and not settings.force:
        say(f"skipping: this configuration already finished as run {done[-1].run_id} ('{done[-1].name}'); force=true runs it again")
        return done[-1].metrics.get("test/acc")
    exported = exported_runs([Path(launch.base_dir, p) for p in settings.exports]).get(fp)
    if exported and not settings.force:
        say(f"skipping: this configuration already finished as run {exported[1]}, recorded in {exported[0]}; force=true runs it again")
        return None
    device = pick_device(settings.device)
    check_precision(settings.precision, device)
    threads = settings.threads or launch.default_threads
    if threads:
        torch.set_num_threads(threads)
    data = dataset(settings.data).to(device)

    path = Path(launch.base_dir, settings.checkpoint_dir, f"{fp}.pt")
    resume = None if settings.force else resumable(tracker, path, fp)
    close_dead_runs(tracker, previous, keep=resume.run_id if resume else None)
    run = open_run(tracker, cfg, settings, launch, fp, device, resume)
    try:
        accuracy = Training(settings, cfg, data, device, run, path, fp).run(resume)
    except (KeyboardInterrupt, Terminated):
        run.fail("interrupted (Ctrl-C or SIGTERM); run the same command again to resume", killed=True)
        raise
    except BaseException as err:
        run.fail(f"{type(err).__name__}: {err}")
        path.unlink(missing_ok=True)  # a failure would repeat itself: the next attempt starts afresh
        raise
    run.finish()
    path.unlink(missing_ok=True)
    return accuracy


class Training:
    """Builds a run's objects, trains with a checkpoint per epoch, evaluates and logs."""

    def __init__(self, settings: Config, cfg: DictConfig, data: Dataset, device: torch.device, run: TrackedRun, path: Path, fp: str):
        self.settings, self.cfg, self.data, self.run_log, self.path, self.fp = settings, cfg, data, run, path, fp
        torch.manual_seed(settings.seed)  # model initialisation draws from the global generator
        layout = torch.channels_last if settings.channels_last else torch.preserve_format
        self.model = build_model(settings.model).to(device, memory_format=layout)
        # The compiled wrapper shares the model's parameters; checkpoints and artifacts save the plain model.
        self.net = torch.compile(self.model) if settings.compile else self.model
        self.optimizer = build_optimizer(self.model.parameters(), settings.optimizer)
        self.loss_fn = build_loss(settings.loss)
        self.transform = build_transform(settings.transform)
        self.generator = torch.Generator(device=device).manual_seed(settings.seed)
        self.labels = data.test.labels.cpu()
        self.history: list[EpochResult] = []

    def run(self, resume: checkpoint.Checkpoint | None) -> float:
        if resume:
            checkpoint.restore(resume, self.model, self.optimizer, self.generator)
            self.history = [EpochResult(**h) for h in resume.history]
            self._log_missing_epochs()
        fit(
            self.net,
            self.optimizer,
            self.loss_fn,
            build_schedule(self.settings.schedule),
            self.transform,
            self.data,
            epochs=self.settings.schedule.epochs,
            batch_size=self.settings.batch_size,
            generator=self.generator,
            on_epoch=self._after_epoch,
            progress=self.settings.progress,
            start_epoch=len(self.history) + 1,
            precision=self.settings.precision,
        )
        test = self._test()
        say(f"test/loss {test.loss:.4f}  test/acc {test.acc:.4f}")
        self.run_log.log_metrics({"test/loss": test.loss, "test/acc": test.acc}, step=len(self.history))
        with tempfile.TemporaryDirectory(prefix="fmnist-artifacts-") as folder:
            write_artifacts(Path(folder), self.cfg, self.history, test, self.labels, self.model)
            self.run_log.log_artifacts(Path(folder))
        return test.acc

    def _test(self) -> Evaluation:
        return evaluate(self.net, self.data.test, self.transform, self.loss_fn, precision=self.settings.precision)

    def _after_epoch(self, result: EpochResult) -> None:
        self.history.append(result)
        # Checkpoint first, then log: after a kill, the checkpoint is never behind the logged metrics.
        state = checkpoint.capture(self.run_log.run_id, self.fp, self.history, self.model, self.optimizer, self.generator)
        checkpoint.save(state, self.path)
        self.run_log.log_metrics(result.metrics(), step=result.epoch)
        self._milestone(result.epoch)

    def _log_missing_epochs(self) -> None:
        """After a resume: log the checkpointed epochs a kill kept from reaching the store."""
        logged = set(self.run_log.logged_steps("epoch/seconds"))
        for result in self.history:
            if result.epoch not in logged:
                self.run_log.log_metrics(result.metrics(), step=result.epoch)
        self._milestone(len(self.history))

    def _milestone(self, epoch: int) -> None:
        """Test-set evaluation at an earlier epoch where this run stands for a shorter cell, or at `study.test_at`."""
        study = self.settings.study
        if epoch not in [*study.test_at, *study.readings.values()] or epoch >= self.settings.schedule.epochs:
            return
        if epoch in self.run_log.logged_steps("test/acc"):
            return
        test = self._test()
        with tempfile.TemporaryDirectory(prefix="fmnist-milestone-") as folder:
            write_predictions(Path(folder, predictions_name(epoch, final=False)), self.labels, test.predictions)
            self.run_log.log_artifacts(Path(folder))
        self.run_log.log_metrics({"test/loss": test.loss, "test/acc": test.acc}, step=epoch)


def write_predictions(path: Path, labels: torch.Tensor, predictions: torch.Tensor) -> None:
    rows = (f"{i},{int(y)},{int(p)}" for i, (y, p) in enumerate(zip(labels.tolist(), predictions.tolist())))
    path.write_text("index,label,prediction\n" + "\n".join(rows) + "\n")


def write_confusion(path: Path, confusion: torch.Tensor) -> None:
    """Every count of the confusion matrix: one row per true class, one column per predicted class."""
    lines = ["true\\predicted," + ",".join(plots.CLASS_NAMES)]
    lines += [f"{name}," + ",".join(map(str, row)) for name, row in zip(plots.CLASS_NAMES, confusion.tolist())]
    path.write_text("\n".join(lines) + "\n")


def write_artifacts(folder: Path, cfg: DictConfig, history: list[EpochResult], test: Evaluation, labels, model) -> None:
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    curves = {"": {key: [r.metrics()[key] for r in history] for key in ("train/acc", "val/acc", "train/loss", "val/loss")}}
    plots.learning_curves(curves, folder / "learning_curves.png", title=f"test/acc {test.acc:.4f}")
    confusion = confusion_matrix(test.predictions, labels, len(plots.CLASS_NAMES))
    plots.confusion_matrix(confusion, folder / "confusion_matrix.png", title=f"test/acc {test.acc:.4f}")
    write_confusion(folder / "confusion_matrix.csv", confusion)
    rows = [
        f"{i},{name},{acc:.4f},{int(count)}"
        for i, (name, acc, count) in enumerate(zip(plots.CLASS_NAMES, per_class_accuracy(confusion).tolist(), confusion.sum(1)))
    ]
    (folder / "per_class_accuracy.csv").write_text("class,name,accuracy,count\n" + "\n".join(rows) + "\n")
    write_predictions(folder / "test_predictions.csv", labels, test.predictions)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, folder / "model.pt")
