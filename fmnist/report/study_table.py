"""A study's table per model, from typed results (a store's or an export's): rows, footnote, choice, files."""

from pathlib import Path

from fmnist import plots, study
from fmnist.report.render import latex_table, markdown_table, write_csv
from fmnist.results import Result
from fmnist.stats import ALPHA, MIN_SEEDS

CSV_COLUMNS = [
    "model", "cell", "factor", "level", "n_seeds", "test_acc_mean", "test_acc_std", "diff", "ci_low", "ci_high", "p", "p_holm",
    "verdict", "reference_acc", "p_tost", "mcnemar_p", "val_acc_mean", "note",
]
HEADER = ["cell", "factor", "n", "test acc % (mean ± std)", "Δ pp [95% CI]", "p", "p_holm", "verdict", "val acc %", "reference %", "note"]


def _num(value: float | None, signed: bool = False, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return "<1e-300" if value == 0 else f"{value:.2g}"


def display(row: study.Row) -> list[str]:
    diff = "—" if row.diff is None else f"{_num(row.diff, True)}"
    if row.ci_low is not None:
        diff += f" [{_num(row.ci_low, True)}, {_num(row.ci_high, True)}]"
    note = row.note
    if row.cell == study.COMBINED:
        note = "; ".join(filter(None, [f"ran {row.level.replace('+', ' + ')}", note]))
    if row.verdict == "too few seeds" and row.mcnemar_p:
        note = "; ".join(filter(None, [f"McNemar p per seed (test-set sampling only): {', '.join(_p(p) for p in row.mcnemar_p)}", note]))
    return [
        row.cell, row.factor, str(row.n_seeds), f"{_num(row.test_acc_mean)} ± {_num(row.test_acc_std)}", diff, _p(row.p),
        _p(row.p_holm), row.verdict, _num(row.val_acc_mean), _num(row.reference_acc), note,
    ]


def csv_row(row: study.Row) -> dict[str, object]:
    values = {c: getattr(row, c) for c in CSV_COLUMNS if c != "mcnemar_p"}
    values["mcnemar_p"] = " ".join(f"{p:.4g}" for p in row.mcnemar_p)
    return {c: values[c] for c in CSV_COLUMNS}


def footnote(rows: list[study.Row], margin: float) -> str:
    tested = sum(r.p_holm is not None for r in rows)
    return (
        "Δ: the cell's test accuracy minus the baseline's, per training seed (both trained with that seed), averaged over the "
        "seeds the two share; the 95% CI is a t interval over those per-seed differences and p a two-sided paired t-test, so "
        "they cover seed-to-seed training variation on this fixed test set, not the sampling of the test set itself. "
        f"p_holm: Holm-adjusted over the {tested} comparisons with at least {MIN_SEEDS} paired seeds in this table. "
        f"Verdicts: better/worse if p_holm < {ALPHA}; equivalent if TOST puts the mean difference within ±{margin:g} points "
        f"(Holm-adjusted p < {ALPHA}); identical if both made the same prediction on every test image for every seed; "
        f"too few seeds below {MIN_SEEDS} paired seeds; otherwise inconclusive. val acc: mean validation accuracy at the "
        "cell's last epoch, which is what the combination is chosen on. reference: the study's own published figure, "
        "where it gave one.\n"
    )


def choice_section(cells: dict[str, study.CellRuns], results: list[Result], factors: list[str], strict: bool) -> str:
    """The combination chosen on validation, the study's own beside it, and the command that runs it."""
    picks = study.choose(cells, factors, strict)
    rule = "a significant gain (paired t on val acc over seeds, Holm over the factors)" if strict else "any gain"
    lines = [
        f"Combination chosen on validation: per factor, the level with the highest mean val acc at its last epoch, kept if it "
        f"beats the baseline's by {rule}. The test set plays no part in the choice.\n",
        markdown_table([
            {"factor": p.factor, "best on validation": p.best, "Δ val acc pp": _num(p.gain, True), "p_holm (val)": _p(p.p_holm),
             "chosen": "yes" if p.level else "no"}
            for p in picks
        ]),
    ]
    chosen = [p.level for p in picks if p.level]
    last = results[-1]
    if last.study_choice:
        reference = f" (it reported {last.study_choice_acc:.2f}%)" if last.study_choice_acc is not None else ""
        lines.append(f"The study's own choice: {' + '.join(last.study_choice)}{reference}.\n")
    if chosen:
        seeds = sorted(cells[study.BASELINE].by_seed)
        lines.append(f"The combined cell ({' + '.join(chosen)}):\n\n    {study.combined_command(last.command, chosen, seeds)}\n")
    else:
        lines.append("No level beat the baseline on validation: the combination is the baseline itself.\n")
    ran = cells.get(study.COMBINED)
    if ran is not None and chosen and sorted(ran.level.split("+")) != sorted(chosen):
        lines.append(f"The combined row ran {ran.level}, not the combination chosen here.\n")
    return "\n".join(lines)


def factor_figures(cells: dict[str, study.CellRuns], factors: list[str], path_for) -> list[Path]:
    """Per factor, the levels' validation curves (mean over seeds) against the baseline's."""

    def mean_curves(cell: study.CellRuns) -> dict[str, list[float]]:
        per_seed = [r.curves for r in cell.by_seed.values()]
        length = min(len(c["val/acc"]) for c in per_seed)
        return {k: [sum(c[k][i] for c in per_seed) / len(per_seed) for i in range(length)] for k in per_seed[0]}

    files = []
    for factor in factors:
        members = [c for c in cells.values() if c.factor in (factor, study.BASELINE)]
        # Longest first: a cell read earlier from the same run is drawn on top of the part it shares.
        members.sort(key=lambda c: -min(len(r.curves["val/acc"]) for r in c.by_seed.values()))
        if len(members) > 1:
            files.append(path_for(factor))
            curves = {f"{c.cell} (n={len(c.by_seed)})": mean_curves(c) for c in members}
            plots.learning_curves(curves, files[-1], title=f"{factor}: validation curves, mean over seeds")
    return files


def study_tables(results: list[Result], out_dir: Path, name: str | None, command: str, strict: bool, margin: float | None) -> list[Path]:
    """One table per (study, model): Markdown, CSV, LaTeX, per-factor figures; printed too."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for result in sorted(results, key=lambda r: r.start_time):
        groups.setdefault((result.study, result.model), []).append(result)
    several = len({s for s, _ in groups}) > 1
    files = []
    for (study_name, model), members in sorted(groups.items()):
        stem = "_".join([name or study_name, study_name, model] if several else [name or study_name, model])
        files += one_table(members, out_dir, stem, command, strict, margin if margin is not None else members[-1].margin)
    return files


def _order(results: list[Result]) -> tuple[list[str], list[str]]:
    """Cells and factors in the order they were first run (the study file's), baseline first, combined last."""
    cells, factors = [study.BASELINE], []
    for r in results:
        if r.factor in (study.BASELINE, study.COMBINED):
            continue
        factors += [r.factor] if r.factor not in factors else []
        cells += [r.cell] if r.cell not in cells else []
    return [*cells, study.COMBINED], factors


def one_table(results: list[Result], out_dir: Path, stem: str, command: str, strict: bool, margin: float) -> list[Path]:
    model, study_name = results[-1].model, results[-1].study
    cells = study.gather(results)
    order, factors = _order(results)
    rows = study.table(model, cells, order, margin)
    text = (
        f"# {study_name}: {model}\n\nMade by `{command}`.\n\n"
        f"{markdown_table([dict(zip(HEADER, display(r))) for r in rows])}\n{footnote(rows, margin)}\n"
        f"{choice_section(cells, results, factors, strict)}"
    )
    files = [out_dir / f"{stem}.md", out_dir / f"{stem}.csv", out_dir / f"{stem}.tex"]
    files[0].write_text(text)
    write_csv([csv_row(r) for r in rows], files[1])
    caption = f"{study_name} for {model}: test accuracy over seeds and paired differences against the baseline"
    files[2].write_text(latex_table(HEADER[:9], [display(r)[:9] for r in rows], caption, "llrrlrrlr"))
    files += factor_figures(cells, factors, lambda factor: out_dir / f"{stem}_{factor}.png")
    print(text)
    return files
