"""Per-job cost of Hydra + MLflow: a 20-job MLP sweep against the same trainings without them.

With them: `python -m fmnist.run -m model=mlp seed=0,...,19 schedule.epochs=1` into an SQLite
store, timed from the command's start to its exit (Python start-up, composition, store queries,
params, per-epoch metrics, checkpoints, artifacts: everything). Without them:
benchmarks/bare_sweep.py, the same 20 trainings and test evaluations written by hand, also timed
as a whole process, so both sides pay Python start-up, the torch import and data loading once.

On this shared 2-core machine the trainings' own speed drifts by ~10% from minute to minute,
which is as large as the overhead being measured. So each round runs the sweep and then the bare
process, and the figure is given two ways: the plain difference of the two wall times, and the
difference once each side's time in epochs (the `epoch/seconds` both record) is taken out of it,
which cancels the drift. The median over rounds is the headline; every round is printed.

The store is created before the clock starts, as it exists for every sweep after a project's
first run; its creation (MLflow's schema migrations, a one-off per store) is timed on its own.

    python benchmarks/overhead.py [--jobs 20] [--epochs 1] [--rounds 3]
"""

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import machine
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fmnist.config import register_schema, validate
from fmnist.tracking import Tracker

BENCH = Path(__file__).resolve().parent
CONF = BENCH.parent / "conf"


@dataclass
class Round:
    creation: float  # seconds to create the store
    sweep: float  # seconds of the sweep command
    sweep_epochs: float  # of which in epochs (sum of its runs' epoch/seconds)
    bare: float  # seconds of the bare process
    bare_epochs: float  # of which in epochs

    def per_job(self, jobs: int) -> float:
        return (self.sweep - self.bare) / jobs

    def per_job_outside_epochs(self, jobs: int) -> float:
        return ((self.sweep - self.sweep_epochs) - (self.bare - self.bare_epochs)) / jobs


def overrides(jobs: int, epochs: int, train_size: int | None = None, threads: int | None = None) -> list[str]:
    subset = [f"data.train_size={train_size}"] if train_size else []
    subset += [f"threads={threads}"] if threads else []
    return ["model=mlp", f"seed={','.join(map(str, range(jobs)))}", f"schedule.epochs={epochs}", *subset, "progress=false"]


def timed(command: list[str]) -> tuple[float, str]:
    """Seconds one command takes as a whole process, and its output; its error output if it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout


def composed(jobs: int, epochs: int, train_size: int | None, threads: int | None) -> dict:
    """The sweep's config without its seed (each job sets that), resolved to plain values."""
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[o for o in overrides(jobs, epochs, train_size, threads) if not o.startswith("seed=")])
    validate(cfg)  # the bare side trains only what the sweep would accept
    return OmegaConf.to_container(cfg, resolve=True)


def one_round(folder: Path, cfg: dict, jobs: int, epochs: int, train_size: int | None, threads: int | None) -> Round:
    """A fresh store, the sweep into it, then the bare process."""
    uri = f"sqlite:///{folder}/mlflow.db"
    creation, _ = timed([sys.executable, "-c", f"from fmnist.tracking import Tracker; Tracker({uri!r}, 'fmnist')"])
    sweep, _ = timed([sys.executable, "-m", "fmnist.run", "-m", *overrides(jobs, epochs, train_size, threads),
                      f"tracking.uri={uri}", f"hydra.sweep.dir={folder}/multirun", f"checkpoint_dir={folder}/ckpt"])
    tracker = Tracker(uri, "fmnist", create=False)
    finished = [r for r in tracker.runs() if r.status == "FINISHED"]
    if len(finished) != jobs:
        sys.exit(f"only {len(finished)} of {jobs} jobs finished; the comparison would be meaningless")
    sweep_epochs = sum(sum(tracker.history(r.run_id, "epoch/seconds")) for r in finished)
    (folder / "config.json").write_text(json.dumps(cfg))
    bare, printed = timed([sys.executable, str(BENCH / "bare_sweep.py"), str(folder / "config.json"), "--jobs", str(jobs)])
    bare_epochs = float(printed.strip().splitlines()[-1].removeprefix("epoch seconds:"))
    return Round(creation, sweep, sweep_epochs, bare, bare_epochs)


def report(rounds: list[Round], jobs: int, epochs: int, sweep_command: str, what: str, threads: int | None) -> str:
    plain = [r.per_job(jobs) for r in rounds]
    outside = [r.per_job_outside_epochs(jobs) for r in rounds]
    with_creation = [r.creation / jobs + x for r, x in zip(rounds, outside)]
    rows = [
        f"| {i} | {r.creation:.1f} | {r.sweep:.1f} | {r.sweep_epochs:.1f} | {r.bare:.1f} | {r.bare_epochs:.1f} | {p:.2f} | **{o:.2f}** |"
        for i, (r, p, o) in enumerate(zip(rounds, plain, outside), start=1)
    ]
    listed = ", ".join(f"{x:.2f}" for x in outside)
    return "\n".join([
        f"{jobs} MLP jobs, each training {epochs} epoch(s) on {what}, then evaluating the test set. Each round, one after the",
        f"other ({threads or 'torch default'} torch thread(s) per side): create a fresh SQLite store (a one-off per store: new process, imports, MLflow's",
        f"schema migrations); run the sweep `{sweep_command}` into it; run `python benchmarks/bare_sweep.py`, the same trainings and test evaluations",
        "written by hand, without Hydra or MLflow. Both are timed as whole processes, so both pay Python start-up, the torch",
        "import and data loading once. \"In epochs\" is the sum of `epoch/seconds` (training and validation passes) on each",
        "side; taking it out cancels the drift of the machine's speed between the two runs.",
        "",
        "| round | store creation (s) | sweep (s) | sweep in epochs (s) | bare process (s) | bare in epochs (s) | overhead per job, plain difference (s) | overhead per job, epochs taken out (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"**Overhead of Hydra + MLflow: {statistics.median(outside):.2f} s per job**, the median of {len(rounds)} round(s) ({listed}),",
        f"with each side's epochs taken out; as the plain difference of wall times: {statistics.median(plain):.2f} s per job (median).",
        f"Counting the store's creation as well: {statistics.median(with_creation):.2f} s per job.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="sweep, then bare process, this many times (default 3)")
    parser.add_argument("--train-size", type=int, help="train on this many images (default: all); for smoke tests")
    parser.add_argument("--threads", type=int, help="torch threads on both sides (default: torch's); 1 leaves a core to other work")
    parser.add_argument("--out", type=Path, default=machine.RESULTS, help="folder for overhead.md (default: results/bench)")
    args = parser.parse_args()
    cfg = composed(args.jobs, args.epochs, args.train_size, args.threads)
    rounds = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="fmnist-overhead-") as folder:
            rounds.append(one_round(Path(folder), cfg, args.jobs, args.epochs, args.train_size, args.threads))
    what = f"{args.train_size:,} training images" if args.train_size else "the full training set"
    sweep_command = f"python -m fmnist.run -m {' '.join(overrides(args.jobs, args.epochs, args.train_size, args.threads))}"
    body = report(rounds, args.jobs, args.epochs, sweep_command, what, args.threads)
    command = f"python benchmarks/overhead.py --jobs {args.jobs} --epochs {args.epochs} --rounds {args.rounds}"
    command += f" --train-size {args.train_size}" if args.train_size else ""
    command += f" --threads {args.threads}" if args.threads else ""
    machine.write(args.out / "overhead.md", "Per-job overhead of Hydra + MLflow", command, body)


if __name__ == "__main__":
    main()
