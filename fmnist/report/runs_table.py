"""The plain comparison: one row per finished run, the params that differ, the final figures."""

from pathlib import Path

from fmnist import plots, stats
from fmnist.identity import is_semantic
from fmnist.report.render import markdown_table, write_csv
from fmnist.tracking import RunRecord, Tracker

CURVE_KEYS = ("train/acc", "val/acc", "train/loss", "val/loss")
EACH_RUN_DRAWN = 20  # above this many runs differing in their seed, the curves are drawn per setting


def varying_params(runs: list[RunRecord]) -> list[str]:
    """Param keys whose values are not the same in every run, in sorted order."""
    keys = sorted({k for run in runs for k in run.params if is_semantic(k)})
    return [k for k in keys if len({run.params.get(k) for run in runs}) > 1]


def result_row(run: RunRecord, curves: dict[str, list[float]], seconds: list[float], keys: list[str]) -> dict[str, object]:
    row: dict[str, object] = {"run": run.name}
    row.update({k: run.params.get(k, "") for k in keys})
    row["epochs"] = len(curves.get("val/acc", []))
    for key in ("val/acc", "val/loss", "test/acc", "test/loss"):  # accuracies in percent, as in every other table
        value = run.metrics.get(key, float("nan"))
        row[f"{key.replace('/', ' ')} %" if key.endswith("acc") else key] = f"{100 * value:.2f}" if key.endswith("acc") else value
    row["seconds"] = sum(seconds)
    row["processor, precision"] = f"{run.facts.processor or 'not recorded'}, {run.params.get('precision', 'fp32')}"  # what the seconds were on
    return row


def seed_summary(rows: list[dict[str, object]], keys: list[str]) -> list[dict[str, object]]:
    """Runs that differ only in their seed (on one processor class, in one precision), pooled: n, test accuracy mean ± std, min and max, mean seconds."""
    config_keys = [k for k in keys if k != "seed"] + ["processor, precision"]  # never pooled across processor classes
    groups: dict[tuple, list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in config_keys), []).append(row)
    summary = []
    for config, members in groups.items():
        acc = [float(m["test acc %"]) for m in members]
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
        {"run": r.name, "status": r.status, "reason": r.facts.failure or "still running, or its process was killed"}
        for r in runs
        if r.status != "FINISHED"
    ]
    return f"\nRuns that did not finish ({len(failures)}):\n\n{markdown_table(failures)}" if failures else ""


def comparison_report(tracker: Tracker, runs: list[RunRecord], out_dir: Path, name: str, command: str) -> list[Path]:
    """One row per finished run: the params that differ, then the final figures."""
    finished = [r for r in runs if r.status == "FINISHED"]
    keys = varying_params(finished)
    rows, curves = [], {}
    histories = tracker.histories([run.run_id for run in finished], (*CURVE_KEYS, "epoch/seconds"))
    for run in finished:
        run_curves = {key: list(histories[run.run_id][key].values()) for key in CURVE_KEYS}
        rows.append(result_row(run, run_curves, list(histories[run.run_id]["epoch/seconds"].values()), keys))
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
        if "seed" in keys and len(curves) > EACH_RUN_DRAWN:  # a legend of hundreds of runs: per setting, its seeds behind their mean
            by_setting: dict[str, list[dict[str, list[float]]]] = {}
            for run in finished:
                setting = " ".join(f"{k}={run.params.get(k)}" for k in keys if k != "seed") or "every run"
                by_setting.setdefault(setting, []).append({k: list(histories[run.run_id][k].values()) for k in ("val/acc", "val/loss")})
            plots.seed_curves({f"{s} (n={len(c)})": c for s, c in by_setting.items()}, files[-1], title=f"{name}: each seed thin, the mean thick")
        else:
            plots.learning_curves(curves, files[-1], title=name)
    print(table)
    return files
