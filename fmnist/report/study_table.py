"""A study's table per model, from typed results (a store's or an export's): rows, footnote, secondary
comparisons, the choice on validation, the next stage, files; and one forest plot per study."""

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from fmnist import plots, stats
from fmnist.evidence import CellRuns, Evidence, comparison, evidence, paired
from fmnist.report.render import interval, latex_table, markdown_table, num, p_text, write_csv
from fmnist.results import Result, Studied
from fmnist.sequential import DECIDED, MOST_SEEDS, Decision, SeedsDesign, decide
from fmnist.study import BASELINE, COMBINED, command_line, levels_of

ALPHA, MIN_SEEDS = stats.ALPHA, stats.MIN_SEEDS


@dataclass
class Row:
    model: str
    cell: str
    factor: str
    level: str
    n_seeds: int
    test_acc_mean: float  # %
    test_acc_std: float
    val_acc_mean: float  # %
    reference_acc: float | None
    diff: float | None = None  # points, cell - baseline, mean over the paired seeds at hand
    ci_low: float | None = None  # plain 95% t interval over those seeds
    ci_high: float | None = None
    p: float | None = None  # plain paired t over the seeds at hand
    q: float | None = None  # the design's sequential p-value (the plain p for a fixed design)
    q_holm: float | None = None
    q_tost_holm: float | None = None
    rci_low: float | None = None  # 95% repeated confidence interval at the cell's last look
    rci_high: float | None = None
    verdict: str = "reference"
    stage: int | None = None  # the stage that decided or stopped the cell
    seeds_needed: int | None = None  # the first look with 80% power at +-effect (its observed SD); None: none within max
    chance: float | None = None  # conditional power at +-effect from its last look, planned SD (open and futile cells)
    reason: str = ""
    mcnemar_p: list[float] = field(default_factory=list)  # per paired seed, test-set sampling only (descriptive)
    note: str = ""


CSV_COLUMNS = [
    "model", "cell", "factor", "level", "n_seeds", "test_acc_mean", "test_acc_std", "diff", "ci_low", "ci_high", "p", "q", "q_holm",
    "q_tost_holm", "rci_low", "rci_high", "verdict", "stage", "seeds_needed", "chance", "reason", "reference_acc", "mcnemar_p",
    "val_acc_mean", "note",
]


def _needed(row: Row, sequential: bool) -> str:
    if row.verdict in DECIDED or row.verdict in ("reference", "too few seeds", "not run"):
        return "—"
    if row.seeds_needed is not None:
        return str(row.seeds_needed)
    return "more than max" if sequential else f"more than {MOST_SEEDS}"


def _row(ev: Evidence, cell: CellRuns) -> Row:
    test = [100 * r.test_acc for r in cell.by_seed.values()]
    mean, std = stats.mean_std(test) if test else (float("nan"), float("nan"))
    val_mean = stats.mean_std([100 * r.val_acc for r in cell.by_seed.values()])[0] if test else float("nan")
    row = Row(ev.model, cell.cell, cell.factor, cell.level, len(test), mean, std, val_mean, cell.reference_acc, note="; ".join(cell.left_out))
    if cell.cell == BASELINE:
        return row
    base = ev.cells[BASELINE]
    seeds = paired(base, cell)
    diffs = [100 * (cell.by_seed[s].test_acc - base.by_seed[s].test_acc) for s in seeds]
    row.mcnemar_p = [stats.mcnemar_exact(*stats.discordant(base.by_seed[s].correct, cell.by_seed[s].correct)) for s in seeds]
    if len(diffs) >= 2:
        plain = stats.paired_t(diffs, ev.margin)
        row.diff, row.ci_low, row.ci_high, row.p = plain.diff, plain.ci_low, plain.ci_high, plain.p
    elif diffs:
        row.diff = diffs[0]
    _decided(row, ev.outcome.decisions[cell.cell])
    return row


def _decided(row: Row, d: Decision) -> None:
    row.q, row.q_holm, row.q_tost_holm, row.verdict, row.stage, row.reason = d.q, d.q_holm, d.q_tost_holm, d.verdict, d.stage, d.reason
    if d.rci is not None:
        row.rci_low, row.rci_high = float(d.rci[0]), float(d.rci[1])
    row.seeds_needed, row.chance = d.seeds_needed, d.chance
    if row.verdict == "equivalent" and d.q_holm is not None and d.q_holm < ALPHA:
        row.note = "; ".join(filter(None, [row.note, "consistently different from the baseline, but by less than the margin"]))


def rows(ev: Evidence) -> list[Row]:
    return [_row(ev, ev.cells[name]) for name in ev.order]


def display(row: Row, sequential: bool) -> list[str]:
    note = row.note
    if row.cell == COMBINED:
        note = "; ".join(filter(None, [f"ran {' + '.join(levels_of(row.cell, row.level))}", note]))
    if row.verdict == "too few seeds" and row.mcnemar_p:
        note = "; ".join(filter(None, [f"McNemar p per seed (test-set sampling only): {', '.join(p_text(p) for p in row.mcnemar_p)}", note]))
    if row.reason and row.verdict not in ("better", "worse"):
        note = "; ".join(filter(None, [row.reason, note]))
    test = f"{num(row.test_acc_mean)} ± {num(row.test_acc_std)}"
    if sequential:
        return [row.cell, row.factor, str(row.n_seeds), test, num(row.diff, True), interval(row.rci_low, row.rci_high), p_text(row.p),
                p_text(row.q_holm), row.verdict, "—" if row.stage is None else str(row.stage), _needed(row, True), num(row.val_acc_mean),
                num(row.reference_acc), note]
    diff = num(row.diff, True) + ("" if row.ci_low is None else f" {interval(row.ci_low, row.ci_high)}")
    return [row.cell, row.factor, str(row.n_seeds), test, diff, p_text(row.p), p_text(row.q_holm), row.verdict, _needed(row, False),
            num(row.val_acc_mean), num(row.reference_acc), note]


def header(sequential: bool, effect: float) -> list[str]:
    needed = f"seeds for 80% power at ±{effect:g}"
    if sequential:
        return ["cell", "factor", "n", "test acc % (mean ± std)", "Δ pp", "95% repeated CI", "p", "q_holm", "verdict", "stage",
                needed, "val acc %", "reference %", "note"]
    return ["cell", "factor", "n", "test acc % (mean ± std)", "Δ pp [95% CI]", "p", "p_holm", "verdict", needed, "val acc %",
            "reference %", "note"]


def csv_row(row: Row) -> dict[str, object]:
    values = {c: getattr(row, c) for c in CSV_COLUMNS if c != "mcnemar_p"}
    values["mcnemar_p"] = " ".join(f"{p:.4g}" for p in row.mcnemar_p)
    if row.seeds_needed is None and _needed(row, True) != "—":
        values["seeds_needed"] = "more than max"
    return {c: values[c] for c in CSV_COLUMNS}


def footnote(ev: Evidence, table_rows: list[Row]) -> str:
    tested = sum(r.q_holm is not None for r in table_rows)
    effect = ev.record.effect
    common = (
        "Δ: the cell's test accuracy minus the baseline's, per training seed (both trained with that seed), averaged over the "
        "seeds the two share; p: a two-sided paired t-test over those seeds (what a reader recomputes from the export). They cover "
        "seed-to-seed training variation on this fixed test set, not the sampling of the test set itself. "
    )
    verdicts = (
        f"Verdicts: better/worse if q_holm < {ALPHA}; equivalent if TOST puts Δ within ±{ev.margin:g} points (Holm-adjusted "
        f"< {ALPHA}); identical if both made the same prediction on every test image for every seed. "
    )
    if ev.design is None:
        return (
            common + f"95% CI: a t interval over the per-seed differences. p_holm: Holm-adjusted over the {tested} comparisons with "
            f"at least {MIN_SEEDS} paired seeds. " + verdicts + f"too few seeds below {MIN_SEEDS} paired seeds; otherwise "
            f"inconclusive. seeds for 80% power at ±{effect:g}: for a cell without a verdict, the paired seeds at which a paired t "
            f"at the level it now faces would call a true change of ±{effect:g} points (the study's smallest worth reporting) with "
            f"80% power, from the SD of its per-seed differences (more than {MOST_SEEDS}: none within {MOST_SEEDS}). val acc: mean "
            "validation accuracy at the cell's last epoch, which is what the combination is chosen on. reference: the study's own "
            "published figure, where it gave one.\n"
        )
    looks = ", ".join(map(str, ev.design.looks()))
    return (
        common + f"Sequential design (seeds: {ev.design.describe()}; looks at {looks} paired seeds; the smallest difference worth "
        f"reporting ±{effect:g} points): after each stage a cell with a verdict gets no more seeds, and a cell whose |t| falls "
        f"below the futility bound planned for a true change of ±{effect:g} points stops (futile: such a change would be shown "
        "with little chance from there; the reason gives it). The combined cell is chosen on validation on the first stage's "
        "seeds and tested on the seeds after them, a stage later. q_holm: the design's sequential p-value (how unlikely, with no "
        f"effect and the futility stops as they fall, so low a weighted minimum p over the looks would be), Holm-adjusted over the "
        f"{tested} comparisons; it controls false verdicts over the whole procedure (results/stats/sequential.md). 95% repeated "
        "CI: at the cell's last look, wide enough that every look's interval covers the true Δ at once with 95% however the cell "
        "stops. stage: the stage that decided or stopped the cell. " + verdicts + "undecided: max reached without a verdict. "
        f"seeds for 80% power at ±{effect:g}: for a cell without a verdict, the first look of the design at which its test, at "
        f"that look's level and the Holm level it now faces, would call a true change of ±{effect:g} points with 80% power, from "
        "the SD of its per-seed differences (more than max: no look of the design does). val acc: mean validation accuracy at the "
        "cell's last epoch, which is what the combination is chosen on (on the first stage's seeds). reference: the study's own "
        "published figure, where it gave one.\n"
    )


def plan_section(ev: Evidence) -> str:
    """What the design can show at its planned SD (python -m fmnist.plan), and each open cell's outlook from its own SD."""
    if ev.design is None:
        return ""
    from fmnist.plan import forecast, outlook

    rule = ev.outcome.rule
    lines = forecast(rule, ev.design.sd, COMBINED in ev.outcome.decisions).lines()
    lines[0] = "The design's forecast (`python -m fmnist.plan`), on simulated " + lines[0][0].lower() + lines[0][1:]
    rejected = sum(d.verdict in ("better", "worse") for d in ev.outcome.decisions.values())
    level = rule.alpha / max(1, rule.cells - rejected)
    compared = {c.name: c for c in ev.comparisons}
    for name in ev.outcome.open_cells:
        c, d = compared.get(name), ev.outcome.decisions[name]
        if c is not None and d.n:
            lines.append(f"- {name}, open at its look at {d.n} seeds ({len(c.diffs)} in): "
                         f"{outlook(rule, c.diffs, d.n, d.least, level).text(rule.effect)}.")
    return "\n".join(lines) + "\n"


# ----- secondary comparisons: the combination against its best part, ordered levels against each other -----


def secondary(ev: Evidence) -> list[Row]:
    """Their own Holm family, tested the way the design tests (sequentially if it has stages), without stopping anything."""
    pairs = []
    combined = ev.cells.get(COMBINED)
    if combined is not None:
        parts = [ev.cells[c] for c in combined.levels if c in ev.cells]
        if parts:
            best = max(parts, key=lambda c: stats.mean_std([r.val_acc for r in c.by_seed.values()])[0])
            pairs.append((best, combined, f"combined vs {best.cell} (its best part on validation)"))
    for factor in ev.record.ordered:
        levels = [ev.cells[c] for c in ev.order if c in ev.cells and ev.cells[c].factor == factor]
        pairs += [(low, high, f"{high.cell} vs {low.cell}") for low, high in zip(levels, levels[1:])]
    comparisons = [comparison(name, low, high) for low, high, name in pairs]
    outcome = decide(comparisons, ev.design, ev.margin, ev.record.effect, stopping=False)
    found = []
    for (_, high, name), c in zip(pairs, comparisons):
        row = Row(ev.model, name, "secondary", high.level, len(c.diffs), float("nan"), float("nan"), float("nan"), None)
        if len(c.diffs) >= 2:
            plain = stats.paired_t(c.diffs, ev.margin)
            row.diff, row.ci_low, row.ci_high, row.p = plain.diff, plain.ci_low, plain.ci_high, plain.p
        _decided(row, outcome.decisions[name])
        found.append(row)
    return found


def secondary_section(ev: Evidence, found: list[Row]) -> str:
    if not found:
        return ""
    sequential = ev.design is not None
    table = [
        {"secondary comparison": r.cell, "n": r.n_seeds, "Δ pp": num(r.diff, True),
         ("95% repeated CI" if sequential else "95% CI"): interval(r.rci_low, r.rci_high) if sequential else interval(r.ci_low, r.ci_high),
         "p": p_text(r.p), "q_holm" if sequential else "p_holm": p_text(r.q_holm), "verdict": r.verdict}
        for r in found
    ]
    return (
        "Secondary comparisons (their own Holm family, on the seeds both cells have; they stop no cell): the combined cell against "
        "the level it contains that scored best on validation, and each ordered factor's levels against the next.\n\n"
        f"{markdown_table(table)}\n"
    )


# ----- the choice on validation and what to run next -----


def choice_section(ev: Evidence, strict: bool) -> str:
    """The combination chosen on validation, the study's own beside it, and the command that runs it."""
    if len(ev.factors) < 2:
        return ""  # one factor: nothing to combine
    rule = "a significant gain (paired t on val acc over seeds, Holm over the factors)" if strict else "any gain"
    seeds = ev.choice_seeds()
    on = f" on the first stage's seeds ({', '.join(map(str, seeds))})" if seeds is not None else ""
    lines = [
        f"Combination chosen on validation{on}: per factor, the level with the highest mean val acc at its last epoch, kept if it "
        f"beats the baseline's by {rule}. The test set plays no part in the choice.\n",
        markdown_table([
            {"factor": p.factor, "best on validation": p.best, "Δ val acc pp": num(p.gain, True), "p_holm (val)": p_text(p.p_holm),
             "chosen": "yes" if p.level else "no"}
            for p in ev.picks
        ]),
    ]
    own = ev.record.choice
    if own.levels:
        reference = f" (it reported {own.reference_acc:.2f}%)" if own.reference_acc is not None else ""
        lines.append(f"The study's own choice: {' + '.join(own.levels)}{reference}.\n")
    chosen = ev.chosen
    ran = ev.cells.get(COMBINED)
    if len(chosen) == 1 and ran is None:
        lines.append(f"Validation chose one level, {chosen[0]}: that cell is the combination, so no combined cell is run.\n")
    elif chosen and ran is None and seeds is not None:
        lines.append(f"The combined cell ({' + '.join(chosen)}) is tested on the seeds after the first stage's: the next stage runs it.\n")
    elif chosen and ran is None:
        run_on = ev.cells[BASELINE].seeds()
        lines.append(f"The combined cell ({' + '.join(chosen)}):\n\n    {command_line(ev.record.command, run_on, combine=chosen)}\n")
    elif chosen:
        lines.append(f"The combined cell ran {' + '.join(ran.levels)}.\n")
        if sorted(ran.levels) != sorted(chosen):
            lines.append(f"That is not the combination chosen here ({' + '.join(chosen)}).\n")
    else:
        lines.append("No level beat the baseline on validation: the combination is the baseline itself.\n")
    return "\n".join(lines)


def shared_cells(ev: Evidence, cell: str) -> list[str]:
    """`cell` and the cells read from the same runs (e.g. baseline, epochs10 and epochs20 from one 20-epoch run)."""
    runs = {r.run_id for r in ev.cells[cell].by_seed.values()}
    return [c for c in ev.order if c != COMBINED and runs & {r.run_id for r in ev.cells[c].by_seed.values()}]


def _seeds_word(seeds: list[int]) -> str:
    if not seeds:
        return "nothing"
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def next_stage_section(ev: Evidence, owed: str | None = None) -> str:
    """What the next stage runs, by hand too; `owed`: why it has not been run (the export folder's owed.yaml)."""
    outcome = ev.outcome
    if ev.design is None:
        return ""
    wanted = ev.next_runs()
    if not wanted:
        waiting = [name for name, d in outcome.decisions.items() if d.verdict == "open"]
        if waiting:
            return f"Stage {outcome.stages_done + 1} waits for the first stage's choice before it can run {', '.join(waiting)}.\n"
        return f"Every cell is decided or stopped after stage {outcome.stages_done}: the study is complete.\n"
    # Cells read from one run need one job: per group of them, the seeds any member needs and some member lacks.
    commands: dict[tuple[int, ...], list[str]] = {}
    for group in dict.fromkeys(tuple(shared_cells(ev, name)) for name in wanted if name != COMBINED and name in ev.cells):
        seeds = sorted({s for name in group for s in wanted.get(name, [])})
        lacking = tuple(s for s in seeds if any(s not in ev.cells[name].by_seed for name in group))
        if lacking:
            commands.setdefault(lacking, []).extend(c for c in group if c not in commands.get(lacking, []))
    combine = list(ev.cells[COMBINED].levels) if COMBINED in ev.cells else ev.combination
    have = set(ev.cells[COMBINED].by_seed) if COMBINED in ev.cells else set()
    combined_seeds = [s for s in wanted.get(COMBINED, []) if s not in have] if combine else []
    stage = outcome.stages_done + 1
    to_run = sorted({s for seeds in commands for s in seeds} | set(combined_seeds))
    targets = ", ".join(f"{name} to {n} seeds" + (" after the first stage's" if name == COMBINED else "") for name, n in outcome.next_looks.items())
    lines = [f"Stage {stage} runs the open cells ({targets}), with the baseline runs they pair with: "
             f"{_seeds_word(to_run)} still to run. The study's sweep command continues by itself; by hand:\n"]
    for seeds, cells in commands.items():
        lines.append(f"    {command_line(ev.record.command, list(seeds), cells=sorted(cells, key=ev.order.index))}")
    if combined_seeds:
        lines.append(f"    {command_line(ev.record.command, combined_seeds, combine=combine)}")
    if owed:
        lines.append(f"\nWhy stage {stage} has not been run: {owed}")
    return "\n".join(lines) + "\n"


# ----- files -----


def factor_figures(ev: Evidence, path_for) -> list[Path]:
    """Per factor, the levels' validation curves against the baseline's: each seed thin, the mean thick."""
    files = []
    for factor in [*ev.factors, *([COMBINED] if COMBINED in ev.cells else [])]:
        members = [ev.cells[c] for c in ev.order if ev.cells[c].factor in (factor, BASELINE) and ev.cells[c].by_seed]
        # Longest first: a cell read earlier from the same run is drawn on top of the part it shares.
        members.sort(key=lambda c: -min(len(r.curves["val/acc"]) for r in c.by_seed.values()))
        if len(members) > 1:
            files.append(path_for(factor))
            curves = {f"{c.cell} (n={len(c.by_seed)})": [r.curves for r in c.by_seed.values()] for c in members}
            plots.seed_curves(curves, files[-1], title=f"{ev.model}, {factor}: validation curves (each seed thin, the mean thick)")
    return files


def per_seed(ev: Evidence, stem: str, out_dir: Path) -> tuple[str, list[Path]]:
    """Every seed of every cell with its difference from the baseline, the mean curves, and the training time."""
    base = ev.cells[BASELINE].by_seed
    seeds_rows, curve_rows = [], []
    for name in ev.order:
        cell = ev.cells[name]
        for seed, r in cell.by_seed.items():
            diff = 100 * (r.test_acc - base[seed].test_acc) if seed in base and name != BASELINE else None
            seeds_rows.append({"cell": name, "seed": seed, "stage": "" if r.stage is None else r.stage, "test acc %": f"{100 * r.test_acc:.2f}",
                               "Δ pp": "" if diff is None else f"{diff:+.2f}", "val acc %": f"{100 * r.val_acc:.2f}", "epochs": r.epochs,
                               "seconds": f"{r.seconds:.0f}", "run": r.run_id[:8]})
        length = min((len(r.curves["val/acc"]) for r in cell.by_seed.values()), default=0)
        for epoch in range(length):
            acc = [r.curves["val/acc"][epoch] for r in cell.by_seed.values()]
            loss = [r.curves["val/loss"][epoch] for r in cell.by_seed.values()]
            curve_rows.append({"cell": name, "epoch": epoch + 1, "n": len(acc), "val acc % (mean)": f"{100 * sum(acc) / len(acc):.2f}",
                               "val loss (mean)": f"{sum(loss) / len(loss):.4f}"})
    runs: dict[str, tuple[bool, float]] = {}
    for cell in ev.cells.values():
        for r in cell.by_seed.values():
            seconds = max(r.seconds, runs.get(r.run_id, (False, 0.0))[1])
            runs[r.run_id] = (cell.cell == COMBINED, seconds)  # a run read at several epochs counts once, at its longest
    minutes = [sum(s for combined, s in runs.values() if combined == kind) / 60 for kind in (False, True)]
    files = [out_dir / f"{stem}_seeds.csv", out_dir / f"{stem}_curves.csv"]
    write_csv(seeds_rows, files[0])
    write_csv(curve_rows, files[1])
    text = (
        f"Per seed ({files[0].name}):\n\n{markdown_table(seeds_rows)}\nMean validation curves ({files[1].name}):\n\n"
        f"{markdown_table(curve_rows)}\nTraining time, each run counted once: {minutes[0]:.1f} min for the cells, "
        f"{minutes[1]:.1f} min for the combined cell ({len(runs)} runs).\n"
    )
    return text, files


def table_text(studied: Studied, results: list[Result], command: str, options) -> tuple[str, Evidence, list[Row], list[Row]]:
    """A table's Markdown (rows, footnote, forecast, secondary comparisons, choice, next stage), its evidence and rows."""
    record = studied.records[results[-1].run_id]  # the latest run's: the study's design, margin and choice as it now stands
    ev = evidence(results, record, options.strict, options.margin, options.design)
    settings = {(str(r.seeds), r.margin, r.ordered, tuple(r.choice.levels)) for r in map(studied.records.get, {x.run_id for x in results})}
    if len(settings) > 1:
        ev.cells[BASELINE].left_out.append(
            f"the table's runs were made under {len(settings)} different study settings (design, margin, ordered factors or "
            "choice); the latest run's are used")
    sequential = ev.design is not None
    table_rows = rows(ev)
    more = secondary(ev)
    text = (
        f"# {record.study}: {ev.model}\n\nMade by `{command}`.\n\n"
        f"{markdown_table([dict(zip(header(sequential, ev.record.effect), display(r, sequential))) for r in table_rows])}\n"
        f"{footnote(ev, table_rows)}\n{plan_section(ev)}\n"
        f"{secondary_section(ev, more)}{choice_section(ev, options.strict)}\n"
        f"{next_stage_section(ev, options.owed.get((record.study, ev.model)))}\n"
        f"The table's sweep: `{shlex.join(['python', '-m', 'fmnist.run', '-m', *record.command])}`.\n"
    )
    return text, ev, table_rows, more


def one_table(studied: Studied, results: list[Result], out_dir: Path, stem: str, command: str, options) -> tuple[list[Path], Evidence]:
    text, ev, table_rows, more = table_text(studied, results, command, options)
    sequential, record = ev.design is not None, studied.records[results[-1].run_id]
    files = [out_dir / f"{stem}.md", out_dir / f"{stem}.csv", out_dir / f"{stem}.tex"]
    write_csv([csv_row(r) for r in [*table_rows, *more]], files[1])
    width = 9 if sequential else 8
    caption = f"{record.study} for {ev.model}: test accuracy over seeds and paired differences against the baseline"
    files[2].write_text(latex_table(header(sequential, ev.record.effect)[:width], [display(r, sequential)[:width] for r in table_rows], caption, "l" * width))
    files += factor_figures(ev, lambda factor: out_dir / f"{stem}_{factor}.png")
    if options.per_seed:
        seeds_text, seed_files = per_seed(ev, stem, out_dir)
        text += f"\n{seeds_text}"
        files += seed_files
    files[0].write_text(text)
    print(text)
    return files, ev


def forest_panel(label: str, ev: Evidence, table_rows: list[Row]) -> plots.ForestPanel:
    base = next(r for r in table_rows if r.cell == BASELINE)
    sequential = ev.design is not None
    entries = []
    for r in table_rows:
        if r.cell == BASELINE or r.diff is None:
            continue
        low, high = (r.rci_low, r.rci_high) if sequential else (r.ci_low, r.ci_high)
        reference = None if r.reference_acc is None or base.reference_acc is None else r.reference_acc - base.reference_acc
        entries.append(plots.ForestEntry(f"{r.cell} (n={r.n_seeds})", r.diff, low, high, r.verdict, reference))
    return plots.ForestPanel(label, entries, ev.margin, "95% repeated CI" if sequential else "95% CI")


@dataclass
class Options:
    strict: bool = False  # choose only levels with a significant gain on validation
    margin: float | None = None  # None: the study's
    design: SeedsDesign | None = ...  # ...: the study's
    per_seed: bool = False
    owed: dict[tuple[str, str], str] = field(default_factory=dict)  # (study, model) -> why its next stage has not been run


def study_tables(studied: Studied, out_dir: Path, name: str | None, command: str, options: Options) -> list[Path]:
    """One table per (study, model, table): Markdown, CSV, LaTeX, figures; printed too; and a forest plot per study."""
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for result in sorted(studied.results, key=lambda r: r.start_time):
        groups.setdefault((result.study, result.model, result.table), []).append(result)
    studies = {s for s, _, _ in groups}
    several = len(studies) > 1
    files, by_study = [], {}

    def head(study_name: str) -> list[str]:  # the file names' start: --name, and the study where there are several
        return [name, study_name] if several and name else [name or study_name]

    for (study_name, model, _), members in sorted(groups.items()):
        stem = "_".join([*head(study_name), model])
        if sum(1 for s, m, _ in groups if (s, m) == (study_name, model)) > 1:
            stem += f"_{members[-1].table[:6]}"
        made, ev = one_table(studied, members, out_dir, stem, command, options)
        files += made
        by_study.setdefault(study_name, []).append((stem.removeprefix(f"{name or study_name}_"), ev, rows(ev)))
    for study_name, panels in sorted(by_study.items()):
        path = out_dir / f"{'_'.join(head(study_name))}_forest.png"
        plots.forest([forest_panel(label, ev, table_rows) for label, ev, table_rows in panels], path,
                     title=f"{study_name}: each cell against its baseline")
        files.append(path)
    return files
