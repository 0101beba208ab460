"""Wall time until test accuracy first reaches the study's best (92.86%), 94% and 95%, per preset; and the curve.

`--run fast --seeds 0` first trains the preset once per seed into the store, evaluating the test set
after every epoch (`study.test_at`; those evaluations are not part of the preset itself, which
only tests at the end). Then every finished run of the experiments is read back: the time is the
wall clock from the run's start (after imports and data loading) to the moment the first test
accuracy at or above the threshold was logged, so training, validation, test evaluations and
logging all count.

    python benchmarks/time_to_accuracy.py --run fast --seeds 0      # writes time_to_accuracy_fast.md
    python benchmarks/time_to_accuracy.py --experiments fast best   # runs already in the store: time_to_accuracy.md
    python benchmarks/time_to_accuracy.py --figure results/bench/time_to_accuracy.png --timelines results/bench/time_to_accuracy_*.csv \
        results/bench/avx2-held/time_to_accuracy_*.csv                # test accuracy against wall seconds, every run drawn

Beside each .md goes a .csv of every run's timeline (preset, processor class, precision, seed, epoch, seconds, test
accuracy): what the figure is drawn from, so it is redrawn from committed files alone.
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine
from hydra import compose, initialize_config_dir

from fmnist import stats
from fmnist.config import register_schema
from fmnist.tracking import RunRecord, Tracker, resolve_uri

CONF = Path(__file__).resolve().parent.parent / "conf"

THRESHOLDS = (0.9286, 0.94, 0.95)  # the study's best (ResNet-18, 224 px, combined run); the presets' targets (issue 31)
TIMELINE = ["preset", "processor class", "precision", "seed", "epoch", "seconds", "test acc"]


def run_preset(preset: str, overrides: list[str], seed: int, uri: str, folder: Path) -> float:
    """Train `experiment=<preset>` with the test set evaluated after every epoch; returns the command's wall seconds."""
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        epochs = compose("config", overrides=[f"experiment={preset}", *overrides]).schedule.epochs
    every_epoch = ",".join(str(e) for e in range(1, epochs))
    command = [sys.executable, "-m", "fmnist.run", f"experiment={preset}", *overrides, f"seed={seed}", f"study.test_at=[{every_epoch}]",
               "progress=false", f"tracking.uri={uri}", f"hydra.run.dir={folder}/outputs", f"checkpoint_dir={folder}/checkpoints"]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def first_reached(timeline: list[tuple[int, float, float]], threshold: float) -> tuple[int, float] | None:
    """(epoch, seconds) of the first logged test accuracy at or above `threshold`."""
    return next(((step, seconds) for step, value, seconds in timeline if value >= threshold), None)


def run_rows(tracker: Tracker, runs: list[RunRecord], timelines: list[dict[str, object]]) -> list[dict[str, object]]:
    """A row per run with its time to each threshold; every logged test accuracy goes to `timelines` too."""
    rows = []
    for run in runs:
        timeline = [(step, value, (when - run.start_time) / 1000) for step, value, when in tracker.history_by_step(run.run_id, "test/acc")]
        row: dict[str, object] = {"run": run.name, "seed": run.params.get("seed"), "final test acc %": 100 * timeline[-1][1]}
        for threshold in THRESHOLDS:
            reached = first_reached(timeline, threshold)
            row[threshold] = reached
        row["run seconds"] = timeline[-1][2]
        rows.append(row)
        timelines += [dict(zip(TIMELINE, (tracker.experiment, run.facts.processor or "", run.params.get("precision", ""), row["seed"], step,
                                          f"{seconds:.1f}", f"{value:.4f}"))) for step, value, seconds in timeline]
    return rows


def fmt(reached: tuple[int, float] | None) -> str:
    return "not reached" if reached is None else f"{reached[1]:.0f} s (epoch {reached[0]})"


def summary(times: list[float], runs: int) -> str:
    """Mean ± std of the times of the runs that reached a threshold (one run: its time alone)."""
    if not times:
        return f"not reached (0/{runs})"
    if len(times) == 1:
        return f"{times[0]:.0f} s (1/{runs} runs)"
    mean, std = stats.mean_std(times)
    return f"{mean:.0f} ± {std:.0f} s ({len(times)}/{runs} runs)"


def section(experiment: str, rows: list[dict[str, object]]) -> str:
    head = "| seed | final test acc % | " + " | ".join(f"to {100 * t:.2f}%" for t in THRESHOLDS) + " | run wall time |"
    lines = [f"## experiment={experiment}", "", head, "|---|---:|" + "---:|" * len(THRESHOLDS) + "---:|"]
    for row in rows:
        reached = " | ".join(fmt(row[t]) for t in THRESHOLDS)
        lines.append(f"| {row['seed']} | {row['final test acc %']:.2f} | {reached} | {row['run seconds']:.0f} s |")
    means = []
    for t in THRESHOLDS:
        times = [row[t][1] for row in rows if row[t]]
        means.append(summary(times, len(rows)))
    lines.append(f"| mean ± std | | {' | '.join(means)} | |")
    return "\n".join(lines)


def sections_for(uri: str, experiments: list[str], timelines: list[dict[str, object]]) -> list[str]:
    sections = []
    for experiment in experiments:
        tracker = Tracker(uri, experiment, create=False)
        finished = [r for r in tracker.runs() if r.status == "FINISHED"]
        sections.append(section(experiment, run_rows(tracker, finished, timelines)))
    return sections


def write_timelines(timelines: list[dict[str, object]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TIMELINE)
        writer.writeheader()
        writer.writerows(timelines)


def figure(paths: list[Path], out: Path) -> None:
    """Test accuracy against wall seconds from the timelines' CSVs: a colour per preset, a line style per processor class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[tuple[str, str, str], list[tuple[int, float, float]]] = {}
    for path in paths:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                runs.setdefault((row["preset"], row["processor class"], row["seed"]), []).append(
                    (int(row["epoch"]), float(row["seconds"]), 100 * float(row["test acc"])))
    presets = sorted({p for p, _, _ in runs})
    classes = sorted({c for _, c, _ in runs})
    fig, ax = plt.subplots(figsize=(8, 5))
    for (preset, kind, seed), points in sorted(runs.items()):
        _, seconds, acc = zip(*sorted(points))  # in epoch order
        first = seed == min(s for p, c, s in runs if (p, c) == (preset, kind))
        ax.plot(seconds, acc, marker=".", color=f"C{presets.index(preset)}", linestyle=("-", "--", ":", "-.")[classes.index(kind) % 4],
                label=f"{preset}, {kind or 'class not recorded'}" if first else None)
    for threshold in THRESHOLDS:
        ax.axhline(100 * threshold, color="grey", linewidth=0.6)
    ax.set(xlabel="wall seconds from the run's start", ylabel="test accuracy %", ylim=(88, 96),
           title="Time to accuracy: each run's test accuracy after each epoch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", metavar="PRESET", help="first train experiment=PRESET once per --seeds (into a fresh store)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--experiments", nargs="+", help="experiments to read from --tracking-uri (without --run)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    parser.add_argument("--out", type=Path, default=machine.RESULTS, help="folder for the .md file (default: results/bench)")
    parser.add_argument("--figure", type=Path, metavar="OUT.png", help="draw the curves of --timelines (nothing is trained or read from a store)")
    parser.add_argument("--timelines", nargs="+", type=Path, default=[], metavar="CSV", help="with --figure: the timelines to draw")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for --run (a changed preset: say so next to the figures)")
    args = parser.parse_args()
    timelines: list[dict[str, object]] = []
    if args.figure:
        if not args.timelines:
            parser.error("--figure draws the CSVs given in --timelines")
        return figure(args.timelines, args.figure)
    if args.run:
        with tempfile.TemporaryDirectory(prefix="fmnist-timeline-") as folder:
            uri = f"sqlite:///{folder}/mlflow.db"
            walls = [f"seed {seed}: {run_preset(args.run, args.overrides, seed, uri, Path(folder)):.0f} s" for seed in args.seeds]
            sections = sections_for(uri, [args.run], timelines)
        sections.append("Whole-command wall time (Python start-up, imports and data loading included): " + ", ".join(walls) + ".")
        command = " ".join(["python benchmarks/time_to_accuracy.py --run", args.run, "--seeds", *map(str, args.seeds), *args.overrides])
        command = machine.command_line(command, args.out)
        name = f"time_to_accuracy_{args.run}.md"  # one file per preset trained, so training one keeps the others
    elif args.experiments:
        sections = sections_for(resolve_uri(args.tracking_uri, Path.cwd()), args.experiments, timelines)
        command = machine.command_line(f"python benchmarks/time_to_accuracy.py --experiments {' '.join(args.experiments)}", args.out)
        name = "time_to_accuracy.md"
    else:
        parser.error("give --run PRESET, or --experiments to read runs already in --tracking-uri")
    note = (
        "Time is measured from each run's start in MLflow (after imports and data loading) to the logging of "
        "the first test accuracy at or above the threshold; every finished run is listed. "
        "Test accuracy is only known at the epochs where it was evaluated (`study.test_at` and the end)."
    )
    machine.write(args.out / name, "Time to accuracy", command, note + f" Every run's timeline: {Path(name).with_suffix('.csv')}.\n\n"
                  + "\n\n".join(sections))
    write_timelines(timelines, (args.out / name).with_suffix(".csv"))


if __name__ == "__main__":
    main()
