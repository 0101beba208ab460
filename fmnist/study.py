"""A study: a baseline and factors, each factor a few levels, each level a list of Hydra overrides.

`conf/study/<name>.yaml` fills `StudyConfig`; the study sweeper (`hydra_plugins/fmnist_study_sweeper`)
asks `jobs()` for the one-factor-at-a-time design: the baseline, and each level changed alone. Cells
that differ only in `schedule.epochs` share one run, read at each cell's epoch, when the schedule does
not depend on the total number of epochs. A study may declare how seeds are added (`seeds`, see
fmnist/sequential.py). What a run knows of its study is one `StudyRecord`. Plain values in and out:
no Hydra, no MLflow.
"""

import shlex
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fmnist.errors import ConfigError, require
from fmnist.schedules import ScheduleConfig, depends_on_length
from fmnist.sequential import SeedsDesign

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
    factors: dict[str, dict[str, Any]] = field(default_factory=dict)  # factor -> level -> {overrides, reference_acc} (checked below)
    choice: Choice = field(default_factory=Choice)
    margin: float = 0.3  # equivalence margin in accuracy points (TOST)
    effect: float = 0.5  # the smallest difference worth reporting, accuracy points: what the seeds design is powered for
    share_epochs: bool = True  # cells differing only in schedule.epochs share one run
    cells: list[str] = field(default_factory=list)  # run only these cells (default: every cell)
    combine: list[str] = field(default_factory=list)  # run the combined cell of these levels instead
    seeds: SeedsDesign | None = None  # how seeds are added stage by stage; None: the seeds given on the command line
    ordered: list[str] = field(default_factory=list)  # factors whose levels go from less to more (compared with each other)
    readings: dict[str, int] = field(default_factory=dict)  # set per job by the sweeper: cell -> epoch
    test_at: list[int] = field(default_factory=list)  # evaluate the test set after these epochs too (no cell)
    stage: int | None = None  # set per job by the sweeper: the stage of the design that runs it
    table: str | None = None  # set per job by the sweeper: the settings of the baseline's run, which every run of the table shares

    def __post_init__(self):
        # OmegaConf types one level of dict values only; the levels of a factor arrive as plain dicts.
        self.factors = {f: {name: _level(self.name, f, name, spec) for name, spec in levels.items()} for f, levels in self.factors.items()}
        require(self.margin > 0, f"study.margin must be > 0 accuracy points, got {self.margin}")
        require(self.effect > 0 and self.effect < 100, f"study.effect (the smallest difference worth reporting) must be > 0 accuracy points, got {self.effect}")
        require(all(e >= 1 for e in self.test_at), f"study.test_at epochs must be >= 1, got {self.test_at}")
        names = [BASELINE, COMBINED]
        for factor, levels in self.factors.items():
            for level in levels:
                require(level not in names, f"study {self.name}: level '{level}' of factor '{factor}' is used twice; level names must be unique")
                names.append(level)
        unknown = [c for c in [*self.cells, *self.combine, *self.choice.levels] if c not in names]
        require(not unknown, f"study {self.name} has no cell {', '.join(map(repr, unknown))}; its cells are: {', '.join(names[:1] + names[2:])}")
        unordered = [f for f in self.ordered if f not in self.factors]
        require(not unordered, f"study {self.name}: study.ordered names {', '.join(unordered)}, which is not a factor; its factors are: "
                               f"{', '.join(self.factors)}")
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
        return LEVELS_JOIN.join(self.combine) if cell == COMBINED else cell


LEVELS_JOIN = "+"  # the combined cell's level name joins the levels it runs ("epochs10+adamw"): its runs' tags and exports hold it


def levels_of(cell: str, level: str) -> tuple[str, ...]:
    """The levels a cell runs, from its level name (the one reader of what `StudyConfig.level_name` writes)."""
    return tuple(level.split(LEVELS_JOIN)) if cell == COMBINED else (level,)


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
    settings: str = ""  # identity.settings_id of the job's config: equal for every seed

    def study_overrides(self, table: str, stage: int | None = None) -> list[str]:
        inner = ",".join(f"{cell}:{epoch}" for cell, epoch in self.readings.items())
        staged = [f"++study.stage={stage}"] if stage is not None else []
        return [*self.overrides, f"++study.readings={{{inner}}}", f"++study.table={table}", *staged]


@dataclass
class Composed:
    """What the sweeper learned by composing one cell's config: its semantic params, schedule and settings."""

    params: dict[str, object]  # flattened semantic params, study keys excluded
    schedule: ScheduleConfig
    settings: str = ""  # identity.settings_id of the cell's config


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
        planned.append(Job(study.level(members[-1]).overrides, epochs, composed[members[-1]].settings))
    return planned


def table_of(study: StudyConfig, composed: dict[str, Composed]) -> str:
    """A table's identity: the settings of the run that stands for its baseline, in the whole design (every cell composed)."""
    every = jobs(replace(study, cells=[], combine=[]), composed)
    return next(job.settings for job in every if BASELINE in job.readings)


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


@dataclass(frozen=True)
class StudyRecord:
    """What a run knows of its study: part of its ledger facts (fmnist.ledger writes and reads it with the run); exports keep it."""

    study: str
    table: str  # runs of one table share it (the settings of the baseline's run), whichever sweep made them
    readings: tuple[Reading, ...]  # the cells the run stands for, in epoch order
    choice: Choice  # what the study's authors combined
    margin: float  # equivalence margin, points
    seeds: SeedsDesign | None  # the study's seeds design; None: a fixed set of seeds
    ordered: tuple[str, ...]  # factors whose levels go from less to more
    stage: int | None  # the stage that ran it
    command: tuple[str, ...]  # the sweep's own overrides (no seed, no study bookkeeping): how to run more of this table
    effect: float = 0.5  # the smallest difference worth reporting, points (records made before it was declared: 0.5)

    @property
    def cell(self) -> str:
        return self.readings[-1].cell

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "StudyRecord":
        seeds = values.get("seeds")
        return cls(
            values["study"], values["table"], tuple(Reading(**r) for r in values["readings"]), Choice(**values["choice"]),
            float(values["margin"]), SeedsDesign(**seeds) if seeds else None, tuple(values.get("ordered", ())), values.get("stage"),
            tuple(values["command"]), float(values.get("effect", 0.5)),
        )


def record(study: StudyConfig, command: list[str]) -> StudyRecord:
    """The record of a job of a study sweep (its readings set by the sweeper)."""
    return StudyRecord(
        study.name, study.table or "", tuple(readings(study)), Choice(list(study.choice.levels), study.choice.reference_acc),
        study.margin, study.seeds, tuple(study.ordered), study.stage, tuple(command), study.effect,
    )


def command_line(command: list[str] | tuple[str, ...], seeds: list[int], cells: list[str] = (), combine: list[str] = ()) -> str:
    """The `python -m fmnist.run` line that runs these cells (or the combination of these levels) over these seeds."""
    kept = [o for o in command if override_key(o) not in ("seed", "study.combine", "study.cells")]
    chosen = [f"study.combine=[{','.join(combine)}]"] if combine else [f"study.cells=[{','.join(cells)}]"] if cells else []
    words = ["python", "-m", "fmnist.run", "-m", *kept, *chosen, f"seed={','.join(map(str, seeds))}"]
    return shlex.join(words)
