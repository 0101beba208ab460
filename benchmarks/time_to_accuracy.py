"""Wall time until test accuracy first reaches the study's best (92.86%) and 93.5%, per preset.

Reads finished runs from the tracking store. Presets that evaluate the test set after every epoch
(`study.test_at`) give the epoch where each threshold is first reached; the time is the wall clock
from the run's start (after imports and data loading) to the moment that figure was logged, so
training, validation, test evaluations and logging all count.

    python benchmarks/time_to_accuracy.py [--experiments fast best] [--tracking-uri sqlite:///mlflow.db]
"""

import argparse
import os
from pathlib import Path

import machine

from fmnist import stats
from fmnist.tracking import RunRecord, Tracker, resolve_uri

THRESHOLDS = (0.9286, 0.935)  # the study's best (ResNet-18, 224 px, combined run); a published small-CNN figure


def first_reached(timeline: list[tuple[int, float, float]], threshold: float) -> tuple[int, float] | None:
    """(epoch, seconds) of the first logged test accuracy at or above `threshold`."""
    return next(((step, seconds) for step, value, seconds in timeline if value >= threshold), None)


def run_rows(tracker: Tracker, runs: list[RunRecord]) -> list[dict[str, object]]:
    rows = []
    for run in runs:
        timeline = tracker.timed_history(run, "test/acc")
        row: dict[str, object] = {"run": run.name, "seed": run.params.get("seed"), "final test acc %": 100 * timeline[-1][1]}
        for threshold in THRESHOLDS:
            reached = first_reached(timeline, threshold)
            row[threshold] = reached
        row["run seconds"] = timeline[-1][2]
        rows.append(row)
    return rows


def fmt(reached: tuple[int, float] | None) -> str:
    return "not reached" if reached is None else f"{reached[1]:.0f} s (epoch {reached[0]})"


def section(experiment: str, rows: list[dict[str, object]]) -> str:
    head = "| seed | final test acc % | " + " | ".join(f"to {100 * t:.2f}%" for t in THRESHOLDS) + " | run wall time |"
    lines = [f"## experiment={experiment}", "", head, "|---|---:|" + "---:|" * len(THRESHOLDS) + "---:|"]
    for row in rows:
        reached = " | ".join(fmt(row[t]) for t in THRESHOLDS)
        lines.append(f"| {row['seed']} | {row['final test acc %']:.2f} | {reached} | {row['run seconds']:.0f} s |")
    means = []
    for t in THRESHOLDS:
        times = [row[t][1] for row in rows if row[t]]
        mean, std = stats.mean_std(times) if times else (float("nan"), float("nan"))
        means.append(f"{mean:.0f} ± {std:.0f} s ({len(times)}/{len(rows)} runs)" if times else f"not reached (0/{len(rows)})")
    lines.append(f"| mean ± std | | {' | '.join(means)} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=["fast", "best"])
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    parser.add_argument("--out", type=Path, default=machine.RESULTS, help="folder for time_to_accuracy.md (default: results/bench)")
    args = parser.parse_args()
    uri = resolve_uri(args.tracking_uri, Path.cwd())
    sections = []
    for experiment in args.experiments:
        tracker = Tracker(uri, experiment, create=False)
        finished = [r for r in tracker.runs() if r.status == "FINISHED"]
        sections.append(section(experiment, run_rows(tracker, finished)))
    command = f"python benchmarks/time_to_accuracy.py --experiments {' '.join(args.experiments)}"
    note = (
        "Time is measured from each run's start in MLflow (after imports and data loading) to the logging of "
        "the first test accuracy at or above the threshold; every finished run of the experiment is listed. "
        "Test accuracy is only known at the epochs the preset evaluates it (`study.test_at` and the end)."
    )
    machine.write(args.out / "time_to_accuracy.md", "Time to accuracy", command, note + "\n\n" + "\n\n".join(sections))


if __name__ == "__main__":
    main()
