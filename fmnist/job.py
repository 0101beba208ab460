"""One job, top to bottom: check the input, decide what the job is, train it epoch by epoch, record it.

Called by `fmnist.run` (the Hydra entry point) with the composed config and what the launcher
knows; usable without Hydra from a test or a notebook. What to skip or resume, the lease and how a
run ends are `fmnist.bookkeeping`'s; the files a run leaves are `fmnist.artifacts`'.
"""

import tempfile
from dataclasses import astuple, dataclass
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from fmnist import checkpoint
from fmnist.artifacts import write_artifacts, write_predictions
from fmnist.bookkeeping import Bookkeeping, Launch, Skip, TrialOutcome, say
from fmnist.config import Config, RunSpec
from fmnist.data import DataConfig, Dataset, Split, load_dataset, split_digest
from fmnist.engine import EpochResult, Evaluation, evaluate, fit
from fmnist.lease import Lease
from fmnist.losses import build_loss
from fmnist.models import build_model, from_data
from fmnist.optimizers import build_optimizer
from fmnist.schedules import learning_rate
from fmnist.search import Pruned, TrialReporter
from fmnist.tracking import TrackedRun, predictions_name
from fmnist.transforms import BatchTransform, build_transform

__all__ = ["Launch", "train"]


def train(spec: RunSpec, launch: Launch) -> float | None:
    """Skip, resume or train one configuration (checked by `config.run_spec`); log everything. Returns the test accuracy."""
    if spec.hardware.why:
        say(spec.hardware.why)
    book = Bookkeeping(spec, launch)  # an unreachable or damaged store stops here
    try:
        return _train(spec, launch, book)
    except BaseException as err:
        if not book.closed:  # failed before a run was opened (data, lease), or how it ended could not be recorded
            book.close(None, err)
        raise


def _train(spec: RunSpec, launch: Launch, book: Bookkeeping) -> float | None:
    settings, device = spec.settings, torch.device(spec.hardware.device)
    data, inputs = dataset(settings.data)  # missing or corrupt data, or sizes it does not have, stop here (a skip too)
    skip = book.begin()
    if skip is not None:
        return skip.outcome
    data = data.to(device)
    if settings.threads or launch.default_threads:
        torch.set_num_threads(settings.threads or launch.default_threads)

    with book.hold():  # a live copy of this job elsewhere: a single run stops here, a sweep's job waits for it
        taken = book.take(lambda saved: misfit(saved, settings, device), spec.hardware)
        if isinstance(taken, Skip):  # it finished while this copy was starting
            return taken.outcome
        run, resume = taken
        if resume is None:
            run.log_datasets(inputs)
        try:
            outcome = Training(spec, data, device, run, book.checkpoint_path, book.job.fingerprint, book.lease).run(resume)
        except Pruned as err:
            say(f"trial {settings.search.trial}: {err}")
            book.close(run, None, pruned=str(err))
            return TrialOutcome(settings.search.trial, "pruned", run.run_id)
        except BaseException as err:
            book.close(run, err)
            raise
        book.close(run, None, resumed=resume is not None)  # under the lease: a copy that lost the job does not finish it
    return outcome


def misfit(resume: checkpoint.Checkpoint, settings: Config, device: torch.device) -> str | None:
    """Why a checkpoint cannot continue this code's run (its model or optimizer changed shape), or None if it fits."""
    try:
        parts = Parts.build(settings, device)
        checkpoint.restore(resume, parts.model, parts.optimizer, parts.generator, parts.averaged)
    except checkpoint.CheckpointError as err:
        return str(err)
    return None


_loaded: dict[tuple, tuple[Dataset, list]] = {}


def dataset(cfg: DataConfig) -> tuple[Dataset, list[tuple[str, str, str, int, str]]]:
    """The data set, read (and verified) once per process, and its three splits as MLflow inputs.

    A sweep's jobs in one process share it: training never writes to the tensors (transforms make
    new ones). Each split's digest is of its content (images and labels), so two runs saw the same
    data exactly when their digests agree.
    """
    key = astuple(cfg)
    if key not in _loaded:
        _loaded.clear()
        data = load_dataset(cfg)
        described = f"{data.source} (val_size={cfg.val_size}, split_seed={cfg.split_seed}, train_size={cfg.train_size}, test_size={cfg.test_size})"
        inputs = [
            (f"fashion-mnist-{name}", split_digest(split), described, len(split), context)
            for name, split, context in (("train", data.train, "training"), ("val", data.val, "validation"), ("test", data.test, "test"))
        ]
        _loaded[key] = (data, inputs)
    return _loaded[key]


def warmed_ema(decay: float):
    """AveragedModel's update for `ema=<decay>`, with the decay warmed up: min(decay, (1 + n) / (10 + n)) after n steps.

    A fixed decay from the first step keeps the untrained start in the average for thousands of steps (0.998 still
    holds 43% of it after an epoch of 420 steps); warmed up, the average follows the weights early and settles to
    `decay` later (0.99 after about 900 steps, 0.998 after about 4,500).
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], steps: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # batch norm's step counters: the trained copy's
            torch._foreach_copy_(averaged, current)
            return
        n = steps.item()
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + n) / (10 + n)))

    return update


@dataclass
class Parts:
    """What a run trains: everything that drives training is here, and in its checkpoint."""

    model: torch.nn.Module
    net: torch.nn.Module  # the model, or its torch.compile wrapper (sharing its parameters)
    optimizer: torch.optim.Optimizer
    loss_fn: object
    transform: BatchTransform
    generator: torch.Generator  # data order and augmentation
    averaged: AveragedModel | None  # the weights' moving average (ema > 0): what is evaluated and saved

    @property
    def evaluated(self) -> torch.nn.Module:
        return self.averaged or self.net

    @property
    def saved(self) -> torch.nn.Module:
        """The weights a run leaves (model.pt): the average where there is one."""
        return self.averaged.module if self.averaged is not None else self.model

    @classmethod
    def build(cls, settings: Config, device: torch.device, train: Split | None = None) -> "Parts":
        """`train`: the training images a whitened first layer is set from (a checkpoint's restore sets it otherwise)."""
        torch.manual_seed(settings.seed)  # model initialisation (and dropout) draw from the global generator
        layout = torch.channels_last if settings.channels_last else torch.preserve_format
        model = build_model(settings.model).to(device, memory_format=layout)
        if train is not None:
            from_data(model, settings.model, train.images)
        return cls(
            model,
            torch.compile(model) if settings.compile else model,
            build_optimizer(model.parameters(), settings.optimizer),
            build_loss(settings.loss),
            build_transform(settings.transform),
            torch.Generator(device=device).manual_seed(settings.seed),
            AveragedModel(model, multi_avg_fn=warmed_ema(settings.ema), use_buffers=True) if settings.ema else None,
        )


class Training:
    """Trains with a checkpoint per epoch, evaluates the test set where asked, logs, and writes the artifacts."""

    def __init__(self, spec: RunSpec, data: Dataset, device, run: TrackedRun, path: Path, fp: str, lease: Lease):
        self.settings, self.values, self.data, self.run_log, self.path, self.fp, self.lease = spec.settings, spec.values, data, run, path, fp, lease
        self.parts = Parts.build(spec.settings, device, data.train)
        self.labels = data.test.labels.cpu()
        self.history: list[EpochResult] = []
        search = spec.settings.search
        self.trial = TrialReporter(search, spec.settings.schedule.epochs) if search.trial is not None else None

    def run(self, resume: checkpoint.Checkpoint | None) -> "float | TrialOutcome":
        p = self.parts
        if resume:
            checkpoint.restore(resume, p.model, p.optimizer, p.generator, p.averaged)
            self.history = [EpochResult(**h) for h in resume.history]
            self._log_missing_epochs()
        fit(
            p.net, p.optimizer, p.loss_fn, learning_rate(self.settings.optimizer.lr, self.settings.schedule), p.transform,
            self.data, epochs=self.settings.schedule.epochs, batch_size=self.settings.batch_size, generator=p.generator,
            on_epoch=self._after_epoch, progress=self.settings.progress, start_epoch=len(self.history) + 1,
            precision=self.settings.precision, between_steps=self.lease.between_steps, averaged=p.averaged,
        )
        test = None if self.trial is not None else self._test()  # a search's trial: the test set plays no part
        self.lease.check()  # a copy that lost the job writes nothing more
        if test is not None:
            say(f"test/loss {test.loss:.4f}  test/acc {test.acc:.4f}")
            if len(self.history) not in self.run_log.logged_steps("test/acc"):  # a resumed run may have logged it before its kill
                self.run_log.log_metrics({"test/loss": test.loss, "test/acc": test.acc}, step=len(self.history))
        with tempfile.TemporaryDirectory(prefix="fmnist-artifacts-") as folder:
            write_artifacts(Path(folder), self.values, self.history, test, self.labels, p.saved)
            self.lease.check()
            self.run_log.log_artifacts(Path(folder))
        return test.acc if test is not None else TrialOutcome(self.settings.search.trial, "complete", self.run_log.run_id)

    def _test(self) -> Evaluation:
        return evaluate(self.parts.evaluated, self.data.test, self.parts.transform, self.parts.loss_fn, precision=self.settings.precision)

    def _after_epoch(self, result: EpochResult) -> None:
        self.lease.check()  # another process took this job over: stop before writing anything
        self.history.append(result)
        p = self.parts
        # Checkpoint first, then log: after a kill, the checkpoint is never behind the logged metrics.
        checkpoint.save(checkpoint.capture(self.run_log.run_id, self.fp, self.history, p.model, p.optimizer, p.generator, p.averaged), self.path)
        self.lease.check()
        self.run_log.log_metrics(result.metrics(), step=result.epoch)
        self._milestone(result.epoch)
        if self.trial is not None:
            self.trial.report(result.epoch, result.val_acc, sum(h.seconds for h in self.history))  # raises Pruned to stop the trial

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
