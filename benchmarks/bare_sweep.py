"""A sweep's trainings written by hand: no Hydra, no MLflow, no checkpoints, no artifacts.

The reference side of benchmarks/overhead.py. It runs as a process of its own, so it pays the
same Python start-up, torch import and data loading as `python -m fmnist.run -m ...` does, and
what is left of the difference is the cost of Hydra and MLflow.

    python benchmarks/bare_sweep.py CONFIG.json --jobs 20

CONFIG.json is a resolved fmnist config (as `OmegaConf.to_container(cfg, resolve=True)` gives it);
job k trains it with seed k, then evaluates the test set, as the sweep's job k does. The last line
printed is the seconds spent in epochs (training and validation passes, as `epoch/seconds` counts
them in a run), so overhead.py can take the training itself out of the comparison.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from fmnist.data import DataConfig, load_dataset
from fmnist.engine import evaluate, fit
from fmnist.losses import LOSSES, build_loss
from fmnist.models import MODELS, build_model
from fmnist.optimizers import OPTIMIZERS, build_optimizer
from fmnist.schedules import SCHEDULES, learning_rate
from fmnist.transforms import TransformConfig, build_transform

# What this script must not import, or it would not be the bare side of the comparison.
TRACKING_AND_CONFIG = ("hydra", "mlflow", "matplotlib")


def train(cfg: dict, data, seed: int) -> tuple[float, float]:
    """One job: the sweep's model, optimizer, schedule and augmentation with this seed.

    Returns its test accuracy and the seconds its epochs took.
    """
    torch.manual_seed(seed)
    schedule = SCHEDULES.config(cfg["schedule"])
    model = build_model(MODELS.config(cfg["model"]))
    optimizer = build_optimizer(model.parameters(), OPTIMIZERS.config(cfg["optimizer"]))
    loss_fn = build_loss(LOSSES.config(cfg["loss"]))
    transform = build_transform(TransformConfig(**cfg["transform"]))
    generator = torch.Generator().manual_seed(seed)
    precision = cfg["precision"]
    lr_at = learning_rate(cfg["optimizer"]["lr"], schedule)
    history = fit(model, optimizer, loss_fn, lr_at, transform, data, schedule.epochs, cfg["batch_size"],
                  generator, progress=False, precision=precision)
    return evaluate(model, data.test, transform, loss_fn, precision=precision).acc, sum(r.seconds for r in history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    cfg = json.loads(args.config.read_text())
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])  # as the sweep's jobs do
    data = load_dataset(DataConfig(**cfg["data"]))
    epoch_seconds = 0.0
    for seed in range(args.jobs):
        acc, seconds = train(cfg, data, seed)
        epoch_seconds += seconds
        print(f"seed {seed}: test/acc {acc:.4f}, epochs {seconds:.2f} s", flush=True)
    imported = sorted({name.split(".")[0] for name in sys.modules} & set(TRACKING_AND_CONFIG))
    if imported:
        sys.exit(f"the bare sweep imported {', '.join(imported)}; it must train without them")
    print(f"epoch seconds: {epoch_seconds:.3f}")


if __name__ == "__main__":
    main()
