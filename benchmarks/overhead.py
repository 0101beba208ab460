"""Per-job cost of Hydra + MLflow: a 20-job MLP sweep against the same training without them.

With them: `python -m fmnist.run -m model=mlp seed=0,...,19 schedule.epochs=1` into an SQLite
store, timed from the command's start to its exit (Python start-up, composition, store queries,
params, per-epoch metrics, artifacts: everything). Without them: the same 20 trainings and test
evaluations in this process, calling the engine directly with data already in memory.

The store is created before the clock starts, as it exists for every sweep after a project's
first run; its creation (MLflow's schema migrations, a one-off per store) is timed on its own and
reported beside the per-job figure, with and without it.

    python benchmarks/overhead.py [--jobs 20] [--epochs 1]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine
import torch
from hydra import compose, initialize_config_dir

from fmnist.config import register_schema, validate
from fmnist.data import load_dataset
from fmnist.engine import evaluate, fit
from fmnist.losses import build_loss
from fmnist.models import build_model
from fmnist.optimizers import build_optimizer
from fmnist.schedules import build_schedule
from fmnist.tracking import Tracker
from fmnist.transforms import build_transform

CONF = Path(__file__).resolve().parent.parent / "conf"


def overrides(jobs: int, epochs: int, train_size: int | None = None) -> list[str]:
    subset = [f"data.train_size={train_size}"] if train_size else []
    return ["model=mlp", f"seed={','.join(map(str, range(jobs)))}", f"schedule.epochs={epochs}", *subset, "progress=false"]


def create_store(uri: str) -> float:
    """Seconds to create a fresh store in a new process, Python start-up and imports included."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"from fmnist.tracking import Tracker; Tracker({uri!r}, 'fmnist')"], check=True, capture_output=True)
    return time.perf_counter() - start


def with_hydra_and_mlflow(folder: Path, jobs: int, epochs: int, train_size: int | None) -> tuple[float, float, int]:
    """Seconds to create the store, seconds of the sweep command, and how many of its runs finished."""
    uri = f"sqlite:///{folder}/mlflow.db"
    creation = create_store(uri)
    command = [sys.executable, "-m", "fmnist.run", "-m", *overrides(jobs, epochs, train_size),
               f"tracking.uri={uri}", f"hydra.sweep.dir={folder}/multirun", f"checkpoint_dir={folder}/ckpt"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    finished = [r for r in Tracker(uri, "fmnist", create=False).runs() if r.status == "FINISHED"]
    return creation, seconds, len(finished)


def without_them(jobs: int, epochs: int, train_size: int | None) -> float:
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[o for o in overrides(jobs, epochs, train_size) if not o.startswith("seed=")])
    settings = validate(cfg)
    data = load_dataset(settings.data)
    start = time.perf_counter()
    for seed in range(jobs):
        torch.manual_seed(seed)
        model = build_model(settings.model)
        optimizer = build_optimizer(model.parameters(), settings.optimizer)
        loss_fn = build_loss(settings.loss)
        transform = build_transform(settings.transform)
        generator = torch.Generator().manual_seed(seed)
        fit(model, optimizer, loss_fn, build_schedule(settings.schedule), transform, data, epochs, settings.batch_size, generator, progress=False)
        evaluate(model, data.test, transform, loss_fn)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, help="train on this many images (default: all); for smoke tests")
    parser.add_argument("--out", type=Path, default=machine.RESULTS, help="folder for overhead.md (default: results/bench)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fmnist-overhead-") as folder:
        creation, swept, finished = with_hydra_and_mlflow(Path(folder), args.jobs, args.epochs, args.train_size)
    if finished != args.jobs:
        sys.exit(f"only {finished} of {args.jobs} jobs finished; the comparison would be meaningless")
    bare = without_them(args.jobs, args.epochs, args.train_size)
    per_job = (swept - bare) / args.jobs
    body = "\n".join([
        f"{args.jobs} MLP jobs, {args.epochs} epoch(s) each on {f'{args.train_size:,} training images' if args.train_size else 'the full training set'}, then the test set; one process each way, run one after the other.",
        "",
        "| way | wall time (s) | per job (s) |",
        "|---|---:|---:|",
        f"| `python -m fmnist.run -m {' '.join(overrides(args.jobs, args.epochs, args.train_size))}` (Hydra + MLflow, SQLite store) | {swept:.1f} | {swept / args.jobs:.2f} |",
        f"| the same trainings and test evaluations, engine called directly, data in memory | {bare:.1f} | {bare / args.jobs:.2f} |",
        f"| creating the SQLite store beforehand (a one-off per store: new process, imports, MLflow's schema migrations) | {creation:.1f} | |",
        "",
        f"**Overhead of Hydra + MLflow: {per_job:.2f} s per job** ({swept / bare:.2f}x the bare time), process start-up, imports",
        f"and data loading included. Counting the store's creation as well: {(swept + creation - bare) / args.jobs:.2f} s per job.",
    ])
    machine.write(args.out / "overhead.md", "Per-job overhead of Hydra + MLflow", f"python benchmarks/overhead.py --jobs {args.jobs} --epochs {args.epochs}" + (f" --train-size {args.train_size}" if args.train_size else ""), body)


if __name__ == "__main__":
    main()
