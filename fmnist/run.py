"""Train one configuration and record it in MLflow: `python -m fmnist.run [overrides]`, `-m` to sweep."""

import hashlib
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fmnist import plots
from fmnist.config import NON_SEMANTIC, Config, fingerprint, flatten, register_schema, validate
from fmnist.data import Dataset, load_dataset
from fmnist.engine import Diverged, EpochResult, Evaluation, evaluate, fit
from fmnist.errors import ConfigError, UserError
from fmnist.losses import build_loss
from fmnist.metrics import confusion_matrix, per_class_accuracy
from fmnist.models import build_model
from fmnist.optimizers import build_optimizer
from fmnist.schedules import build_schedule
from fmnist.tracking import CELL_TAG, FINGERPRINT_TAG, OVERRIDES_TAG, SWEEP_TAG, Tracker, TrackedRun, resolve_uri
from fmnist.transforms import build_transform

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Launch:
    """What the launcher knows that the config does not."""

    overrides: list[str]  # the command line's overrides, as Hydra parsed them
    sweep_id: str  # shared by every job of one multirun
    base_dir: Path  # the folder the command was started in; relative paths are taken from it


def pick_device(requested: str) -> torch.device:
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if requested == "auto":
        return torch.device(next(name for name, ok in available.items() if ok))
    if not available[requested]:
        raise ConfigError(f"device={requested} was asked for but none is available here; use device=auto or device=cpu")
    return torch.device(requested)


def git_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{'-dirty' if dirty else ''}" if commit else "unknown"


def execute(cfg: DictConfig, launch: Launch) -> float:
    """Validate, load, train, evaluate, log. Returns the test accuracy."""
    settings: Config = validate(cfg)
    device = pick_device(settings.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    data = load_dataset(settings.data).to(device)
    tracker = Tracker(resolve_uri(settings.tracking.uri, launch.base_dir), settings.tracking.experiment)
    tags = {
        SWEEP_TAG: launch.sweep_id,
        FINGERPRINT_TAG: fingerprint(cfg),
        OVERRIDES_TAG: shlex.join(launch.overrides),
        "fmnist.device": str(device),
        "fmnist.host": socket.gethostname(),
        "mlflow.source.git.commit": git_commit(),
    }
    if settings.study.cell:
        tags[CELL_TAG] = settings.study.cell
    run = tracker.start_run(run_name(launch.overrides), flatten(OmegaConf.to_container(cfg, resolve=True)), tags)
    try:
        accuracy = train_and_log(settings, cfg, data, device, run)
    except KeyboardInterrupt:
        run.fail("interrupted by the user (Ctrl-C)", killed=True)
        raise
    except BaseException as err:
        run.fail(f"{type(err).__name__}: {err}")
        raise
    run.finish()
    return accuracy


def train_and_log(settings: Config, cfg: DictConfig, data: Dataset, device: torch.device, run: TrackedRun) -> float:
    torch.manual_seed(settings.seed)  # model initialisation draws from the global generator
    model = build_model(settings.model).to(device)
    optimizer = build_optimizer(model.parameters(), settings.optimizer)
    loss_fn = build_loss(settings.loss)
    transform = build_transform(settings.transform)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    labels = data.test.labels.cpu()
    with tempfile.TemporaryDirectory(prefix="fmnist-artifacts-") as tmp:
        folder = Path(tmp)

        def after_epoch(result: EpochResult) -> None:
            run.log_metrics(result.metrics(), step=result.epoch)
            if result.epoch in settings.study.test_at and result.epoch < settings.schedule.epochs:
                # A milestone: this epoch's model stands for a shorter run of the same config.
                test = evaluate(model, data.test, transform, loss_fn)
                run.log_metrics({"test/loss": test.loss, "test/acc": test.acc}, step=result.epoch)
                write_predictions(folder / f"test_predictions_epoch{result.epoch}.csv", labels, test.predictions)

        history = fit(
            model,
            optimizer,
            loss_fn,
            build_schedule(settings.schedule),
            transform,
            data,
            epochs=settings.schedule.epochs,
            batch_size=settings.batch_size,
            generator=generator,
            on_epoch=after_epoch,
            progress=settings.progress,
        )
        test = evaluate(model, data.test, transform, loss_fn)
        print(f"test/loss {test.loss:.4f}  test/acc {test.acc:.4f}", file=sys.stderr)
        run.log_metrics({"test/loss": test.loss, "test/acc": test.acc}, step=len(history))
        write_artifacts(folder, cfg, history, test, labels, model)
        run.log_artifacts(folder)
    return test.acc


def write_predictions(path: Path, labels: torch.Tensor, predictions: torch.Tensor) -> None:
    rows = (f"{i},{int(y)},{int(p)}" for i, (y, p) in enumerate(zip(labels.tolist(), predictions.tolist())))
    path.write_text("index,label,prediction\n" + "\n".join(rows) + "\n")


def write_artifacts(folder: Path, cfg: DictConfig, history: list[EpochResult], test: Evaluation, labels, model) -> None:
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    curves = {"": {key: [r.metrics()[key] for r in history] for key in ("train/acc", "val/acc", "train/loss", "val/loss")}}
    plots.learning_curves(curves, folder / "learning_curves.png", title=f"test/acc {test.acc:.4f}")
    confusion = confusion_matrix(test.predictions, labels, len(plots.CLASS_NAMES))
    plots.confusion_matrix(confusion, folder / "confusion_matrix.png", title=f"test/acc {test.acc:.4f}")
    rows = [
        f"{i},{name},{acc:.4f},{int(count)}"
        for i, (name, acc, count) in enumerate(zip(plots.CLASS_NAMES, per_class_accuracy(confusion).tolist(), confusion.sum(1)))
    ]
    (folder / "per_class_accuracy.csv").write_text("class,name,accuracy,count\n" + "\n".join(rows) + "\n")
    write_predictions(folder / "test_predictions.csv", labels, test.predictions)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, folder / "model.pt")


def run_name(task_overrides: list[str]) -> str:
    """The overrides that change what the run computes, e.g. `loss=mse model=mlp`."""
    semantic = [o for o in task_overrides if not o.lstrip("+~").startswith(NON_SEMANTIC)]
    return " ".join(semantic) if semantic else "defaults"


def sweep_id(hydra_cfg) -> str:
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hydra_cfg.runtime.cwd, hydra_cfg.sweep.dir).resolve()
        stamp = "_".join(sweep_dir.parts[-2:])
        return f"{stamp}-{hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:6]}"
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{hashlib.sha1(str(time.time_ns()).encode()).hexdigest()[:6]}"


register_schema()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    launch = Launch(list(hydra_cfg.overrides.task), sweep_id(hydra_cfg), Path(hydra_cfg.runtime.cwd))
    try:
        return execute(cfg, launch)
    except (UserError, Diverged) as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job and carries on with the rest of the sweep
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
