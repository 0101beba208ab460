"""Per-job cost of Hydra + MLflow: a 20-job MLP sweep against the same training without them.

With them: `python -m fmnist.run -m model=mlp seed=0,...,19 schedule.epochs=1` into a fresh SQLite
store, timed from the command's start to its exit (Python start-up, composition, store queries,
params, per-epoch metrics, artifacts: everything). Without them: the same 20 trainings and test
evaluations in this process, calling the engine directly with data already in memory.

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


def overrides(jobs: int, epochs: int) -> list[str]:
    return ["model=mlp", f"seed={','.join(map(str, range(jobs)))}", f"schedule.epochs={epochs}", "progress=false"]


def with_hydra_and_mlflow(folder: Path, jobs: int, epochs: int) -> tuple[float, int]:
    command = [sys.executable, "-m", "fmnist.run", "-m", *overrides(jobs, epochs),
               f"tracking.uri=sqlite:///{folder}/mlflow.db", f"hydra.sweep.dir={folder}/multirun", f"checkpoint_dir={folder}/ckpt"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    finished = [r for r in Tracker(f"sqlite:///{folder}/mlflow.db", "fmnist", create=False).runs() if r.status == "FINISHED"]
    return seconds, len(finished)


def without_them(jobs: int, epochs: int) -> float:
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[o for o in overrides(jobs, epochs) if not o.startswith("seed=")])
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
    parser.add_argument("--out", type=Path, default=machine.RESULTS, help="folder for overhead.md (default: results/bench)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fmnist-overhead-") as folder:
        swept, finished = with_hydra_and_mlflow(Path(folder), args.jobs, args.epochs)
    if finished != args.jobs:
        sys.exit(f"only {finished} of {args.jobs} jobs finished; the comparison would be meaningless")
    bare = without_them(args.jobs, args.epochs)
    per_job = (swept - bare) / args.jobs
    body = "\n".join([
        f"{args.jobs} MLP jobs, {args.epochs} epoch(s) each on the full training set, then the test set; one process each way, run one after the other.",
        "",
        "| way | wall time (s) | per job (s) |",
        "|---|---:|---:|",
        f"| `python -m fmnist.run -m {' '.join(overrides(args.jobs, args.epochs))}` (Hydra + MLflow, fresh SQLite store) | {swept:.1f} | {swept / args.jobs:.2f} |",
        f"| the same trainings and test evaluations, engine called directly, data in memory | {bare:.1f} | {bare / args.jobs:.2f} |",
        "",
        f"**Overhead of Hydra + MLflow: {per_job:.2f} s per job** ({swept / bare:.2f}x the bare time), process start-up and imports included.",
    ])
    machine.write(args.out / "overhead.md", "Per-job overhead of Hydra + MLflow", f"python benchmarks/overhead.py --jobs {args.jobs} --epochs {args.epochs}", body)


if __name__ == "__main__":
    main()
