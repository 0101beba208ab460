"""Compare runs from the tracking store: `python -m fmnist.report [--sweep ID | --all] [--filter ...]`.

Prints one row per finished run (the config values that differ between the runs, then final
validation and test figures), lists failed runs apart, and writes Markdown, CSV and a figure of
the runs' learning curves overlaid under `results/`.
"""

import argparse
import csv
import os
import re
import shlex
import sys
from pathlib import Path

from fmnist import plots
from fmnist.errors import UserError
from fmnist.tracking import FAILURE_TAG, SWEEP_TAG, RunRecord, Tracker, resolve_uri

CURVE_KEYS = ("train/acc", "val/acc", "train/loss", "val/loss")
RESULT_COLUMNS = ("epochs", "val/acc", "val/loss", "test/acc", "test/loss", "seconds")
IGNORED_PARAMS = ("tracking.", "progress", "device", "threads", "data.root", "data.download")


def varying_params(runs: list[RunRecord]) -> list[str]:
    """Param keys whose values are not the same in every run, in sorted order."""
    keys = sorted({k for run in runs for k in run.params if not k.startswith(IGNORED_PARAMS)})
    return [k for k in keys if len({run.params.get(k) for run in runs}) > 1]


def result_row(run: RunRecord, curves: dict[str, list[float]], seconds: list[float], keys: list[str]) -> dict[str, object]:
    row: dict[str, object] = {"run": run.name}
    row.update({k: run.params.get(k, "") for k in keys})
    row["epochs"] = len(curves.get("val/acc", []))
    for key in ("val/acc", "val/loss", "test/acc", "test/loss"):
        row[key] = run.metrics.get(key, float("nan"))
    row["seconds"] = sum(seconds)
    return row


def format_cell(key: str, value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if key == "seconds" else f"{value:.4f}"
    return str(value)


def markdown_table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "(no runs)\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(format_cell(k, row[k]) for k in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["run"])
        writer.writeheader()
        writer.writerows(rows)


def select_runs(tracker: Tracker, sweep: str | None, all_runs: bool, filter_string: str) -> tuple[list[RunRecord], str]:
    """The runs to compare and a name for the report files."""
    if all_runs or filter_string:
        return tracker.runs(filter_string), "all" if all_runs and not filter_string else "filtered"
    if sweep is None:
        latest = tracker.runs()
        if not latest:
            raise UserError("the experiment has no runs yet; start one with `python -m fmnist.run`")
        sweep = latest[-1].tags.get(SWEEP_TAG, "")
    runs = tracker.runs(f"tags.`{SWEEP_TAG}` = '{sweep}'")
    if not runs:
        raise UserError(f"no runs with sweep id '{sweep}'")
    return runs, f"sweep_{sweep}"


def report(tracker: Tracker, runs: list[RunRecord], out_dir: Path, name: str, command: str) -> list[dict[str, object]]:
    finished = [r for r in runs if r.status == "FINISHED"]
    stopped = [r for r in runs if r.status != "FINISHED"]
    keys = varying_params(finished)
    rows, curves = [], {}
    for run in finished:
        run_curves = {key: tracker.history(run.run_id, key) for key in CURVE_KEYS}
        rows.append(result_row(run, run_curves, tracker.history(run.run_id, "epoch/seconds"), keys))
        label = " ".join(f"{k}={run.params.get(k)}" for k in keys) or run.name
        curves[label] = {k: v for k, v in run_curves.items() if k.startswith("val/")}
    failures = [
        {"run": r.name, "status": r.status, "reason": r.tags.get(FAILURE_TAG, "still running or stopped without a reason")}
        for r in stopped
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    failed_table = f"\nRuns that did not finish ({len(failures)}):\n\n{markdown_table(failures)}" if failures else ""
    (out_dir / f"{name}.md").write_text(f"# {name}\n\nMade by `{command}`.\n\n{table}{failed_table}")
    write_csv(rows, out_dir / f"{name}.csv")
    if curves:
        plots.learning_curves(curves, out_dir / f"{name}_curves.png", title=name)
    print(table + failed_table)
    print(f"wrote {out_dir / name}.md, .csv" + (", _curves.png" if curves else ""))
    return rows


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fmnist.report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="the store the runs were logged to (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    parser.add_argument("--experiment", default="fmnist", help="MLflow experiment name (default: fmnist)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", help="sweep id to report (default: the latest sweep)")
    which.add_argument("--all", action="store_true", help="every run in the experiment")
    parser.add_argument("--filter", default="", help="MLflow filter string, e.g. \"params.`model.name` = 'mlp'\"")
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for the files (default: results/)")
    parser.add_argument("--name", help="base name of the files (default: from the selection)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "fmnist.report", *argv])
    try:
        tracker = Tracker(resolve_uri(args.tracking_uri, Path.cwd()), args.experiment, create=False)
        runs, name = select_runs(tracker, args.sweep, args.all, args.filter)
        report(tracker, runs, args.out, safe_name(args.name or name), command)
    except UserError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
