"""What one study table's runs show so far: its cells, the combination chosen on validation, and
what the seeds design decides (fmnist/sequential.py). The study sweeper asks it which cells to run
next; the report turns it into the table. Plain values in and out: no Hydra, no MLflow.
"""

from dataclasses import dataclass, field

from fmnist import stats
from fmnist.errors import ConfigError
from fmnist.results import Result
from fmnist.sequential import Comparison, Outcome, SeedsDesign, decide
from fmnist.study import BASELINE, COMBINED, StudyRecord, levels_of


@dataclass
class CellRuns:
    """The results one cell of one model keeps, one per seed, and what was left out and why."""

    cell: str
    factor: str
    level: str
    reference_acc: float | None
    by_seed: dict[int, Result]
    left_out: list[str] = field(default_factory=list)

    def seeds(self) -> list[int]:
        return sorted(self.by_seed)

    @property
    def levels(self) -> tuple[str, ...]:
        return levels_of(self.cell, self.level)


def gather(results: list[Result]) -> dict[str, CellRuns]:
    """Cells of one table; a cell never mixes settings or commits: its latest run's settings count.

    `results` are oldest first; a repeated (cell, seed) keeps the latest.
    """
    found: dict[str, list[Result]] = {}
    for result in results:
        found.setdefault(result.cell, []).append(result)
    gathered = {}
    for cell, members in found.items():
        latest = members[-1]
        kept = [r for r in members if (r.settings, r.git_commit) == (latest.settings, latest.git_commit)]
        by_seed = {r.seed: r for r in kept}
        left_out = []
        other = [r for r in members if r not in kept]
        if other:
            commits = sorted({r.git_commit[:12] for r in other})
            left_out.append(
                f"{len(other)} run(s) with other settings or code (commit {', '.join(commits)}) left out; "
                f"this cell's latest runs are at commit {latest.git_commit[:12]}"
            )
        if len(kept) > len(by_seed):
            left_out.append(f"{len(kept) - len(by_seed)} repeated run(s) of the same seed replaced by the latest")
        gathered[cell] = CellRuns(cell, latest.factor, latest.level, latest.reference_acc, dict(sorted(by_seed.items())), left_out)
    return gathered


def paired(reference: CellRuns, other: CellRuns) -> list[int]:
    return sorted(set(reference.by_seed) & set(other.by_seed))


def comparison(name: str, reference: CellRuns, other: CellRuns, lag: int = 0) -> Comparison:
    """`other` minus `reference`, per seed both have, in seed order (points)."""
    seeds = paired(reference, other)
    return Comparison(
        name,
        [100 * (other.by_seed[s].test_acc - reference.by_seed[s].test_acc) for s in seeds],
        [other.by_seed[s].predictions_sha256 == reference.by_seed[s].predictions_sha256 for s in seeds],
        lag,
    )


def fresh(cell: CellRuns, chosen_on: list[int]) -> CellRuns:
    """The combined cell without its runs on the seeds the combination was chosen on: its test uses the others only."""
    reused = [s for s in cell.by_seed if s in chosen_on]
    if not reused:
        return cell
    note = (f"its runs on seed{'s' if len(reused) > 1 else ''} {', '.join(map(str, reused))} left out: validation chose the "
            "combination on those seeds, so it is tested on the seeds after them")
    kept = {s: r for s, r in cell.by_seed.items() if s not in chosen_on}
    return CellRuns(cell.cell, cell.factor, cell.level, cell.reference_acc, kept, [*cell.left_out, note])


@dataclass
class Pick:
    """What the validation rule chose for one factor, and why."""

    factor: str
    level: str | None  # None: no level beat the baseline on validation
    best: str  # the level with the highest mean val/acc
    gain: float  # its mean val/acc minus the baseline's, points, over paired seeds
    p_holm: float | None  # strict rule: paired t on val/acc, Holm over the factors


def choose(cells: dict[str, CellRuns], factors: list[str], strict: bool, seeds: list[int] | None = None) -> list[Pick]:
    """Per factor, the level with the highest mean val/acc (final epoch) if it beats the baseline on validation.

    The default rule counts any gain; `strict` asks for a significant one. Only `seeds` count (a sequential
    study chooses once, on its first stage); the test set is not read.
    """
    def kept(cell: CellRuns) -> dict[int, Result]:
        return {s: r for s, r in cell.by_seed.items() if seeds is None or s in seeds}

    base = kept(cells[BASELINE])
    best, gains, tests = {}, {}, {}
    for factor in factors:
        levels = [c for c in cells.values() if c.factor == factor and set(kept(c)) & set(base)]
        if levels:
            best[factor] = max(levels, key=lambda c: stats.mean_std([r.val_acc for r in kept(c).values()])[0])
    for factor, level in best.items():
        common = sorted(set(kept(level)) & set(base))
        diffs = [100 * (level.by_seed[s].val_acc - base[s].val_acc) for s in common]
        gains[factor] = sum(diffs) / len(diffs)
        if len(common) >= stats.MIN_SEEDS:
            tests[factor] = stats.paired_t(diffs, 1.0).p
    p_holm = dict(zip(tests, stats.holm(list(tests.values())).tolist()))
    picks = []
    for factor, level in best.items():
        helped = gains[factor] > 0 and (not strict or p_holm.get(factor, 1.0) < stats.ALPHA)
        picks.append(Pick(factor, level.cell if helped else None, level.cell, gains[factor], p_holm.get(factor)))
    return picks


@dataclass
class Evidence:
    """One table: its cells, the validation choice, and the design's decision on every comparison with the baseline."""

    model: str
    record: StudyRecord  # the latest run's: the study-wide facts (design, margin, choice, command)
    cells: dict[str, CellRuns]
    order: list[str]  # cells in the order first run (the study file's), baseline first, combined last
    factors: list[str]
    picks: list[Pick]
    outcome: Outcome
    margin: float
    design: SeedsDesign | None
    comparisons: list[Comparison] = field(default_factory=list)  # what the design was given: each cell against the baseline

    @property
    def chosen(self) -> list[str]:
        return [p.level for p in self.picks if p.level]

    @property
    def combination(self) -> list[str]:
        """The levels the combined cell runs: two or more (one chosen level is that cell itself, already in the table)."""
        return self.chosen if len(self.chosen) > 1 else []

    def choice_seeds(self) -> list[int] | None:
        """The seeds the combination is chosen on: the first stage's with a design, else every seed."""
        if self.design is None:
            return None
        return self.cells[BASELINE].seeds()[: self.design.first]

    def next_runs(self) -> dict[str, list[int]]:
        """The seeds each cell needs by the end of the next stage (open cells, and the baseline for them to pair with)."""
        wanted = {}
        chosen_on = self.choice_seeds() or []
        after = max(chosen_on, default=-1) + 1
        for name, n in self.outcome.next_looks.items():
            wanted[name] = list(range(after, after + n)) if name == COMBINED else list(range(n))
        if wanted:
            wanted[BASELINE] = sorted({s for seeds in wanted.values() for s in seeds})
        return wanted


def order_of(results: list[Result]) -> tuple[list[str], list[str]]:
    """Cells and factors in the order they were first run (the study file's), baseline first, combined last."""
    cells, factors = [BASELINE], []
    for r in results:
        if r.factor in (BASELINE, COMBINED):
            continue
        factors += [r.factor] if r.factor not in factors else []
        cells += [r.cell] if r.cell not in cells else []
    return [*cells, COMBINED], factors


def evidence(results: list[Result], record: StudyRecord, strict: bool = False, margin: float | None = None,
             design: SeedsDesign | None = ...) -> Evidence:
    """Everything one table's results show (results oldest first, all of one study, model and table)."""
    cells = gather(results)
    if BASELINE not in cells:
        raise ConfigError(f"{results[-1].model}: the study table needs baseline runs to compare against; run the study's baseline cell")
    order, factors = order_of(results)
    margin = record.margin if margin is None else margin
    design = record.seeds if design is ... else design
    first = None if design is None else cells[BASELINE].seeds()[: design.first]
    picks = choose(cells, factors, strict, first)
    base = cells[BASELINE]
    if design is not None and COMBINED in cells:
        chosen = sorted(p.level for p in picks if p.level)
        ran = cells[COMBINED]
        if sorted(ran.levels) != chosen:
            del cells[COMBINED]
            which = " + ".join(chosen) + (" alone" if len(chosen) == 1 else "") if chosen else "no level"
            base.left_out.append(f"{len(ran.by_seed)} combined run(s) of {' + '.join(ran.levels)} left out: not the combination "
                                 f"this design's validation chose on the first stage's seeds ({which})")
        else:
            cells[COMBINED] = fresh(ran, first)
    comparisons = [comparison(name, base, cells[name]) for name in order + sorted(set(cells) - set(order))
                   if name in cells and name not in (BASELINE, COMBINED)]
    if design is not None and len(factors) > 1:
        # The family is the design's: the combined cell counts whether or not validation chooses one, and it is
        # tested on the seeds after the first stage's, a stage late.
        chosen = sum(1 for p in picks if p.level) > 1
        undecided = any(len(paired(base, cells[name])) < design.first for name in cells if name not in (BASELINE, COMBINED))
        ran = cells.get(COMBINED)
        combined = comparison(COMBINED, base, ran, lag=1) if ran is not None else Comparison(COMBINED, [], [], lag=1)
        combined.planned = ran is not None or chosen or undecided
        comparisons.append(combined)
    elif COMBINED in cells:
        comparisons.append(comparison(COMBINED, base, cells[COMBINED]))
    outcome = decide(comparisons, design, margin, record.effect)
    return Evidence(results[-1].model, record, cells, [c for c in order if c in cells] + sorted(set(cells) - set(order)), factors,
                    picks, outcome, margin, design, comparisons)
