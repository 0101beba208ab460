"""Compare runs from the tracking store: `python -m fmnist.report [--sweep ID | --all] [--filter ...]`.

Prints one row per finished run (the config values that differ between the runs, then final
validation and test figures), lists failed runs apart, and writes Markdown, CSV and a figure of
the runs' learning curves overlaid under `results/`. Runs tagged with a study cell (the
`table2_*` presets) get the study's Table 2 instead, one per model: seed statistics, paired tests
against the baseline, LaTeX too, per-factor figures, and the command for the combined run. The
files are also logged to MLflow as artifacts of a summary run.
"""

import argparse
import csv
import os
import re
import shlex
import sys
from pathlib import Path

from fmnist import plots, stats, study
from fmnist.config import is_semantic
from fmnist.errors import UserError
from fmnist.tracking import CELL_TAG, FAILURE_TAG, SWEEP_TAG, RunRecord, Tracker, resolve_uri

CURVE_KEYS = ("train/acc", "val/acc", "train/loss", "val/loss")


def varying_params(runs: list[RunRecord]) -> list[str]:
    """Param keys whose values are not the same in every run, in sorted order."""
    keys = sorted({k for run in runs for k in run.params if is_semantic(k)})
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


def seed_summary(rows: list[dict[str, object]], keys: list[str]) -> list[dict[str, object]]:
    """Runs that differ only in their seed, pooled: n, test accuracy mean ± std, min and max, mean seconds."""
    config_keys = [k for k in keys if k != "seed"]
    groups: dict[tuple, list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in config_keys), []).append(row)
    summary = []
    for config, members in groups.items():
        acc = [100 * float(m["test/acc"]) for m in members]
        mean, std = stats.mean_std(acc)
        seconds, _ = stats.mean_std([float(m["seconds"]) for m in members])
        summary.append(
            dict(zip(config_keys, config))
            | {
                "n": len(members),
                "seeds": " ".join(str(m.get("seed", "")) for m in members),
                "test acc % (mean ± std)": f"{mean:.2f} ± {std:.2f}",
                "min": f"{min(acc):.2f}",
                "max": f"{max(acc):.2f}",
                "train seconds (mean)": f"{seconds:.1f}",
            }
        )
    return summary


def failures_section(runs: list[RunRecord]) -> str:
    failures = [
        {"run": r.name, "status": r.status, "reason": r.tags.get(FAILURE_TAG) or "still running, or its process was killed"}
        for r in runs
        if r.status != "FINISHED"
    ]
    return f"\nRuns that did not finish ({len(failures)}):\n\n{markdown_table(failures)}" if failures else ""


def comparison_report(tracker: Tracker, runs: list[RunRecord], out_dir: Path, name: str, command: str) -> list[Path]:
    """One row per finished run: the params that differ, then the final figures."""
    finished = [r for r in runs if r.status == "FINISHED"]
    keys = varying_params(finished)
    rows, curves = [], {}
    for run in finished:
        run_curves = {key: tracker.history(run.run_id, key) for key in CURVE_KEYS}
        rows.append(result_row(run, run_curves, tracker.history(run.run_id, "epoch/seconds"), keys))
        label = " ".join(f"{k}={run.params.get(k)}" for k in keys) or run.name
        curves[label] = {k: v for k, v in run_curves.items() if k.startswith("val/")}
    table = markdown_table(rows)
    files = [out_dir / f"{name}.md", out_dir / f"{name}.csv"]
    if "seed" in keys:
        summary = seed_summary(rows, keys)
        table += f"\nOver seeds (every finished run counted, none left out):\n\n{markdown_table(summary)}"
        files.append(out_dir / f"{name}_seeds.csv")
        write_csv(summary, files[-1])
    table += failures_section(runs)
    files[0].write_text(f"# {name}\n\nMade by `{command}`.\n\n{table}")
    write_csv(rows, files[1])
    if curves:
        files.append(out_dir / f"{name}_curves.png")
        plots.learning_curves(curves, files[-1], title=name)
    print(table)
    return files


def _pp(value: float | None, signed: bool = False) -> str:
    if value is None or value != value:  # None or NaN
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def study_cells(values: dict[str, object]) -> list[str]:
    """Display cells of one Table 2 row: cell, n, acc, diff [CI], McNemar, verdict, study, note."""
    v = values
    diff = "—" if v["diff"] is None else f"{_pp(v['diff'], True)} [{_pp(v['ci_low'], True)}, {_pp(v['ci_high'], True)}]"
    p = v["p_mcnemar"]
    test = "—" if p is None else f"{p:.2g} ({v['only_baseline_right']}/{v['only_cell_right']})" if p > 0 else f"<1e-300 ({v['only_baseline_right']}/{v['only_cell_right']})"
    return [str(v["cell"]), str(v["n"]), f"{_pp(v['test_acc_mean'])} ± {_pp(v['test_acc_std'])}", diff, test, str(v["verdict"]), _pp(v["study_acc"]), str(v["note"])]


STUDY_HEADER = ["cell", "n", "test acc % (mean ± std)", "Δ vs baseline, pp [95% CI]", "McNemar p (b/c)", "verdict", "study %", "note"]


def study_markdown(rows: list[dict[str, object]]) -> str:
    return markdown_table([dict(zip(STUDY_HEADER, study_cells(v))) for v in rows])


def study_latex(rows: list[dict[str, object]], caption: str) -> str:
    def tex(text: str) -> str:
        return text.replace("%", r"\%").replace("±", r"$\pm$").replace("—", "--").replace("_", r"\_")

    body = [" & ".join(tex(c) for c in study_cells(v)[:7]) + r" \\" for v in rows]
    header = " & ".join(tex(h) for h in STUDY_HEADER[:7]) + r" \\"
    return "\n".join(
        [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex(caption)}}}", r"\begin{tabular}{lrrllll}", r"\toprule", header, r"\midrule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    )


def factor_figures(rows: list[study.Row], path_for) -> list[Path]:
    """Per factor, the cells' validation curves (mean over seeds) against the baseline's."""
    def mean_curves(cell: study.Cell) -> dict[str, list[float]]:
        per_seed = list(cell.curves.values())
        return {k: [sum(c[k][i] for c in per_seed) / len(per_seed) for i in range(min(len(c[k]) for c in per_seed))] for k in per_seed[0]}

    files = []
    for factor in study.FACTORS:
        members = [r.cell for r in rows if r.cell.name == "baseline" or study.TABLE2.get(r.cell.name, ("",))[0] == factor]
        if len(members) > 1:
            files.append(path_for(factor))
            curves = {f"{c.name} (n={len(c.acc)})": mean_curves(c) for c in members}
            plots.learning_curves(curves, files[-1], title=f"{factor}: validation curves, mean over seeds")
    return files


def study_report(tracker: Tracker, runs: list[RunRecord], out_dir: Path, name: str, command: str, strict: bool) -> list[Path]:
    """Table 2 per model: seed statistics, paired tests against the baseline, the combined run."""
    by_model: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.status == "FINISHED" and CELL_TAG in run.tags:
            by_model.setdefault(run.params.get("model.name", "unknown"), []).append(run)
    rule = "strict (significant gains only)" if strict else "study's (any gain)"
    files = []
    for model, model_runs in sorted(by_model.items()):
        try:
            rows = study.table(study.collect(tracker, model_runs))
        except ValueError as err:
            raise UserError(f"{model}: {err}") from None
        values = [r.values() for r in rows]
        helpful = study.helpful_cells(rows, strict)
        if any(study.TABLE2.get(r.cell.name, ("",))[0] in study.FACTORS for r in rows):
            seeds = sorted(rows[0].cell.acc)
            command_line = study.combined_command(helpful, rows[0].cell.overrides, seeds, tracker.experiment)
            combine = f"Helpful by the {rule} rule: {', '.join(helpful) or 'none'}. The combined run:\n\n    {command_line}\n"
        else:
            combine = (
                f"No single-factor cells for {model} in this selection, so there is nothing to choose a combination from; "
                f"run them with `python -m fmnist.run -m 'experiment=glob(table2_*)' model={model}`.\n"
            )
        stem = f"{name}_{model}"
        text = (
            f"# Table 2: {model}\n\nMade by `{command}`.\n\n{study_markdown(values)}"
            f"{failures_section([r for r in runs if r.params.get('model.name') == model])}\n"
            "Δ: mean over seeds shared with the baseline; 95% CI by a paired bootstrap over seeds and test images. "
            "McNemar: exact test on the test images that exactly one of the two got right (b = only the baseline, "
            "c = only the cell), pooled over the shared seeds. Verdict 'better'/'worse' needs p < 0.05 and a CI "
            "that excludes 0.\n\n"
            f"{combine}"
        )
        files += [out_dir / f"{stem}.md", out_dir / f"{stem}.csv", out_dir / f"{stem}.tex"]
        files[-3].write_text(text)
        write_csv(values, files[-2])
        files[-1].write_text(study_latex(values, f"Table 2 for {model}: test accuracy over seeds and paired tests against the baseline"))
        files += factor_figures(rows, lambda factor: out_dir / f"{stem}_{factor}.png")
        print(text)
    return files


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
    parser.add_argument("--strict", action="store_true", help="Table 2: count only significant gains as helpful")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "fmnist.report", *argv])
    try:
        tracker = Tracker(resolve_uri(args.tracking_uri, Path.cwd()), args.experiment, create=False)
        runs, name = select_runs(tracker, args.sweep, args.all, args.filter)
        name = safe_name(args.name or name)
        args.out.mkdir(parents=True, exist_ok=True)
        if any(CELL_TAG in r.tags for r in runs):
            files = study_report(tracker, runs, args.out, name, command, args.strict)
        else:
            files = comparison_report(tracker, runs, args.out, name, command)
        tracker.log_summary(f"report {name}", files, {"fmnist.report_command": command})
        print("wrote " + ", ".join(str(f) for f in files))
    except UserError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
