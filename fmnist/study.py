"""A study: a baseline and factors, each factor a few levels, each level a list of Hydra overrides.

`conf/study/<name>.yaml` fills `StudyConfig`; the study sweeper (`hydra_plugins/fmnist_study_sweeper`)
asks `jobs()` for the one-factor-at-a-time design: the baseline, and each level changed alone. Cells
that differ only in `schedule.epochs` share one run, read at each cell's epoch, when the schedule does
not depend on the total number of epochs. `python -m fmnist.report` turns the finished cells into a
table (`table()`) and picks the combination on validation data (`choose()`). Plain values in and
out: no Hydra, no MLflow.
"""

import shlex
from dataclasses import dataclass, field

from fmnist import stats
from fmnist.errors import ConfigError, require
from fmnist.results import Result
from fmnist.schedules import ScheduleConfig, depends_on_length

BASELINE, COMBINED = "baseline", "combined"


@dataclass
class Level:
    overrides: list[str] = field(default_factory=list)  # ordinary Hydra overrides, e.g. [optimizer=sgd]
    reference_acc: float | None = None  # a published test accuracy in % for this cell, shown beside ours


@dataclass
class Choice:
    levels: list[str] = field(default_factory=list)  # what the study's authors combined
    reference_acc: float | None = None  # and what it scored, in %


@dataclass
class StudyConfig:
    name: str | None = None  # None: the run is not part of a study
    baseline: Level = field(default_factory=Level)
    factors: dict[str, dict[str, Level]] = field(default_factory=dict)  # factor -> level -> overrides
    choice: Choice = field(default_factory=Choice)
    margin: float = 0.3  # equivalence margin in accuracy points (TOST)
    share_epochs: bool = True  # cells differing only in schedule.epochs share one run
    cells: list[str] = field(default_factory=list)  # run only these cells (default: every cell)
    combine: list[str] = field(default_factory=list)  # run the combined cell of these levels instead
    readings: dict[str, int] = field(default_factory=dict)  # set per job by the sweeper: cell -> epoch
    test_at: list[int] = field(default_factory=list)  # evaluate the test set after these epochs too (no cell)

    def __post_init__(self):
        # OmegaConf types one level of dict values only; the levels of a factor arrive as plain dicts.
        self.factors = {f: {name: _level(self.name, f, name, spec) for name, spec in levels.items()} for f, levels in self.factors.items()}
        require(self.margin > 0, f"study.margin must be > 0 accuracy points, got {self.margin}")
        require(all(e >= 1 for e in self.test_at), f"study.test_at epochs must be >= 1, got {self.test_at}")
        names = [BASELINE, COMBINED]
        for factor, levels in self.factors.items():
            for level in levels:
                require(level not in names, f"study {self.name}: level '{level}' of factor '{factor}' is used twice; level names must be unique")
                names.append(level)
        unknown = [c for c in [*self.cells, *self.combine, *self.choice.levels] if c not in names]
        require(not unknown, f"study {self.name} has no cell {', '.join(map(repr, unknown))}; its cells are: {', '.join(names[:1] + names[2:])}")
        chosen = [self.factor_of(level) for level in self.combine]
        require(
            len(chosen) == len(set(chosen)) and BASELINE not in chosen,
            f"study.combine takes at most one level per factor, got {self.combine}",
        )

    def factor_of(self, cell: str) -> str:
        if cell in (BASELINE, COMBINED):
            return cell
        return next(f for f, levels in self.factors.items() if cell in levels)

    def level(self, cell: str) -> Level:
        if cell == BASELINE:
            return self.baseline
        if cell == COMBINED:
            levels = [self.level(c).overrides for c in self.combine]
            same = sorted(self.combine) == sorted(self.choice.levels)
            return Level([*self.baseline.overrides, *(o for overrides in levels for o in overrides)], self.choice.reference_acc if same else None)
        return self.factors[self.factor_of(cell)][cell]

    def level_name(self, cell: str) -> str:
        return "+".join(self.combine) if cell == COMBINED else cell


def _level(study: str | None, factor: str, name: str, spec) -> Level:
    if isinstance(spec, Level):
        return spec
    where = f"study {study}, factor '{factor}', level '{name}'"
    require(isinstance(spec, dict), f"{where}: give a level as {{overrides: [...], reference_acc: ...}}, got {spec!r}")
    unknown = set(spec) - {"overrides", "reference_acc"}
    require(not unknown, f"{where}: unknown key {', '.join(sorted(unknown))}; a level has overrides and reference_acc")
    overrides = spec.get("overrides", [])
    require(isinstance(overrides, list) and all(isinstance(o, str) and "=" in o for o in overrides),
            f"{where}: overrides must be a list of key=value strings, got {overrides!r}")
    reference = spec.get("reference_acc")
    require(reference is None or isinstance(reference, (int, float)), f"{where}: reference_acc must be a number in %, got {reference!r}")
    return Level(list(overrides), None if reference is None else float(reference))


@dataclass
class Reading:
    """One cell a run stands for, read at `epoch`."""

    cell: str
    factor: str
    level: str
    epoch: int
    reference_acc: float | None = None


def readings(study: StudyConfig) -> list[Reading]:
    """The cells a job stands for, in epoch order (the last is the run's own length)."""
    found = [Reading(c, study.factor_of(c), study.level_name(c), e, study.level(c).reference_acc) for c, e in study.readings.items()]
    return sorted(found, key=lambda r: r.epoch)


def cells(study: StudyConfig) -> list[str]:
    """The cells a sweep of this study runs: every cell, or `study.cells`, or only the combined one."""
    if study.combine:
        return [COMBINED]
    every = [BASELINE, *(level for levels in study.factors.values() for level in levels)]
    return [c for c in every if not study.cells or c in study.cells]


def override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


@dataclass
class Job:
    """One training run of a study sweep: the overrides of its longest cell, read at every cell's epoch."""

    overrides: list[str]
    readings: dict[str, int]  # cell -> epoch

    def study_overrides(self) -> list[str]:
        inner = ",".join(f"{cell}:{epoch}" for cell, epoch in self.readings.items())
        return [*self.overrides, f"++study.readings={{{inner}}}"]


@dataclass
class Composed:
    """What the sweeper learned by composing one cell's config: its semantic params and schedule."""

    params: dict[str, object]  # flattened semantic params, study keys excluded
    schedule: ScheduleConfig


def jobs(study: StudyConfig, composed: dict[str, Composed]) -> list[Job]:
    """The design's jobs: cells whose configs differ only in schedule.epochs share one run."""
    groups: dict[str, list[str]] = {}
    for cell in cells(study):
        rest = {k: v for k, v in composed[cell].params.items() if k != "schedule.epochs"}
        key = repr(sorted(rest.items())) if study.share_epochs else cell
        groups.setdefault(key, []).append(cell)
    planned = []
    for members in groups.values():
        members.sort(key=lambda c: composed[c].schedule.epochs)
        longest = composed[members[-1]].schedule
        if len(members) > 1 and depends_on_length(longest):
            raise ConfigError(
                f"study {study.name}: cells {', '.join(members)} differ only in schedule.epochs, but schedule "
                f"'{longest.name}' depends on the total number of epochs, so one {longest.epochs}-epoch run read "
                f"earlier would not equal a shorter run; set study.share_epochs=false to train each cell on its own"
            )
        epochs = {c: composed[c].schedule.epochs for c in members}
        if len(set(epochs.values())) < len(members):
            same = [c for c in members if list(epochs.values()).count(epochs[c]) > 1]
            raise ConfigError(f"study {study.name}: cells {', '.join(same)} compose to the same configuration; give each level a change of its own")
        planned.append(Job(study.level(members[-1]).overrides, epochs))
    return planned


def check_command_line(study: StudyConfig, keys: list[str]) -> None:
    """A key that a level varies cannot also be fixed on the command line: say which and where."""
    varied: dict[str, str] = {}
    for cell in cells(study):
        for o in study.level(cell).overrides:
            varied.setdefault(override_key(o), cell)
    clash = [k for k in keys if k in varied]
    require(
        not clash,
        f"{', '.join(clash)} is set on the command line and by the study's cell '{varied[clash[0]] if clash else ''}'; "
        "leave it to the study, or change the level in the study file",
    )


# ----- the table: pure functions over typed results -----


@dataclass
class CellRuns:
    """The results one cell of one model keeps, one per seed, and what was left out and why."""

    cell: str
    factor: str
    level: str
    reference_acc: float | None
    by_seed: dict[int, Result]
    left_out: list[str] = field(default_factory=list)


def gather(results: list[Result]) -> dict[str, CellRuns]:
    """Cells of one model; a cell never mixes settings or commits: its latest run's settings count.

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
        gathered[cell] = CellRuns(cell, latest.factor, latest.level, latest.reference_acc, by_seed, left_out)
    return gathered


@dataclass
class Row:
    model: str
    cell: str
    factor: str
    level: str
    n_seeds: int
    test_acc_mean: float  # %
    test_acc_std: float
    diff: float | None  # points, cell - baseline, mean over paired seeds
    ci_low: float | None
    ci_high: float | None
    p: float | None  # paired t over seeds
    p_holm: float | None
    p_tost: float | None  # equivalence within the margin, Holm-adjusted like p
    mcnemar_p: list[float]  # per paired seed, test-set sampling only (descriptive)
    verdict: str
    reference_acc: float | None
    val_acc_mean: float  # %
    note: str = ""


def _paired(base: CellRuns, other: CellRuns) -> list[int]:
    return sorted(set(base.by_seed) & set(other.by_seed))


def table(model: str, cells_found: dict[str, CellRuns], order: list[str], margin: float) -> list[Row]:
    """One row per cell against the baseline: paired differences over seeds, Holm over the rows, a verdict."""
    if BASELINE not in cells_found:
        raise ConfigError(f"{model}: the study table needs baseline runs to compare against; run the study's baseline cell")
    base = cells_found[BASELINE]
    names = [c for c in order if c in cells_found] + sorted(c for c in cells_found if c not in order)
    comparisons = {}
    for name in (n for n in names if n != BASELINE):
        seeds = _paired(base, cells_found[name])
        diffs = [100 * (cells_found[name].by_seed[s].test_acc - base.by_seed[s].test_acc) for s in seeds]
        comparisons[name] = (seeds, stats.paired_t(diffs, margin) if len(seeds) >= 2 else None)
    tested = [n for n, (seeds, _) in comparisons.items() if len(seeds) >= stats.MIN_SEEDS]
    p_holm = dict(zip(tested, stats.holm([comparisons[n][1].p for n in tested])))
    p_tost = dict(zip(tested, stats.holm([comparisons[n][1].p_tost for n in tested])))
    rows = []
    for name in names:
        runs = cells_found[name]
        test = [100 * r.test_acc for r in runs.by_seed.values()]
        mean, std = stats.mean_std(test)
        val_mean, _ = stats.mean_std([100 * r.val_acc for r in runs.by_seed.values()])
        row = Row(model, name, runs.factor, runs.level, len(test), mean, std, None, None, None, None, None, None, [], "reference",
                  runs.reference_acc, val_mean, "; ".join(runs.left_out))
        if name != BASELINE:
            _compare(row, base, runs, comparisons[name], p_holm.get(name), p_tost.get(name))
        rows.append(row)
    return rows


def _compare(row: Row, base: CellRuns, runs: CellRuns, comparison, p_holm, p_tost) -> None:
    seeds, paired = comparison
    row.mcnemar_p = [stats.mcnemar_exact(*stats.discordant(base.by_seed[s].correct, runs.by_seed[s].correct)) for s in seeds]
    identical = bool(seeds) and all(base.by_seed[s].predictions_sha256 == runs.by_seed[s].predictions_sha256 for s in seeds)
    if paired is not None:
        row.diff, row.ci_low, row.ci_high, row.p = paired.diff, paired.ci_low, paired.ci_high, paired.p
    elif seeds:
        s = seeds[0]
        row.diff = 100 * (runs.by_seed[s].test_acc - base.by_seed[s].test_acc)
    row.p_holm, row.p_tost = p_holm, p_tost
    row.verdict = stats.verdict(len(seeds), row.diff, p_holm, p_tost, identical)
    if not seeds:
        row.verdict = "no paired seeds"
    if row.verdict == "equivalent" and p_holm is not None and p_holm < stats.ALPHA:
        row.note = "; ".join(filter(None, [row.note, "consistently different from the baseline, but by less than the margin"]))


@dataclass
class Pick:
    """What the validation rule chose for one factor, and why."""

    factor: str
    level: str | None  # None: no level beat the baseline on validation
    best: str  # the level with the highest mean val/acc
    gain: float  # its mean val/acc minus the baseline's, points, over paired seeds
    p_holm: float | None  # strict rule: paired t on val/acc, Holm over the factors


def choose(cells_found: dict[str, CellRuns], factors: list[str], strict: bool) -> list[Pick]:
    """Per factor, the level with the highest mean val/acc (final epoch) if it beats the baseline on validation.

    The default rule counts any gain; `strict` asks for a significant one. The test set is not read.
    """
    base = cells_found[BASELINE]
    best = {}
    for factor in factors:
        levels = [c for c in cells_found.values() if c.factor == factor and _paired(base, c)]
        if levels:
            best[factor] = max(levels, key=lambda c: stats.mean_std([r.val_acc for r in c.by_seed.values()])[0])
    gains, tests = {}, {}
    for factor, level in best.items():
        seeds = _paired(base, level)
        diffs = [100 * (level.by_seed[s].val_acc - base.by_seed[s].val_acc) for s in seeds]
        gains[factor] = sum(diffs) / len(diffs)
        if len(seeds) >= stats.MIN_SEEDS:
            tests[factor] = stats.paired_t(diffs, 1.0).p
    p_holm = dict(zip(tests, stats.holm(list(tests.values()))))
    picks = []
    for factor, level in best.items():
        helped = gains[factor] > 0 and (not strict or p_holm.get(factor, 1.0) < stats.ALPHA)
        picks.append(Pick(factor, level.cell if helped else None, level.cell, gains[factor], p_holm.get(factor)))
    return picks


def combined_command(command_overrides: list[str], levels: list[str], seeds: list[int]) -> str:
    """The `python -m fmnist.run` line that runs the combined cell over the same seeds as the study."""
    kept = [o for o in command_overrides if override_key(o) not in ("seed", "study.combine", "study.cells")]
    words = ["python", "-m", "fmnist.run", "-m", *kept, f"study.combine=[{','.join(levels)}]", f"seed={','.join(map(str, seeds))}"]
    return shlex.join(words)
