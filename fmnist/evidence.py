"""What one study table's runs show so far: its cells, the combination chosen on validation, and
what the seeds design decides (fmnist/sequential.py). The study sweeper asks it which cells to run
next; the report turns it into the table. Plain values in and out: no Hydra, no MLflow.
"""

from dataclasses import dataclass, field

from fmnist import stats
from fmnist.errors import ConfigError
from fmnist.results import Result
from fmnist.sequential import Comparison, Outcome, SeedsDesign, decide
from fmnist.study import BASELINE, COMBINED, StudyRecord


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


def comparison(name: str, reference: CellRuns, other: CellRuns, published: float | None = None) -> Comparison:
    """`other` minus `reference`, per seed both have, in seed order (points)."""
    seeds = paired(reference, other)
    return Comparison(
        name,
        [100 * (other.by_seed[s].test_acc - reference.by_seed[s].test_acc) for s in seeds],
        [other.by_seed[s].predictions_sha256 == reference.by_seed[s].predictions_sha256 for s in seeds],
        published,
    )


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
    p_holm = dict(zip(tests, stats.holm(list(tests.values()))))
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
    published = base.reference_acc
    comparisons = [
        comparison(name, base, cells[name], _published_diff(cells[name].reference_acc, published))
        for name in order + sorted(set(cells) - set(order)) if name in cells and name != BASELINE
    ]
    if design is not None and COMBINED not in cells and sum(1 for p in picks if p.level) > 1:
        # Validation chose a combination: the family includes it, so stage 1 ends only once it has run.
        comparisons.append(Comparison(COMBINED, [], []))
    outcome = decide(comparisons, design, margin)
    return Evidence(results[-1].model, record, cells, [c for c in order if c in cells] + sorted(set(cells) - set(order)), factors,
                    picks, outcome, margin, design)


def _published_diff(cell: float | None, baseline: float | None) -> float | None:
    return None if cell is None or baseline is None else cell - baseline
