"""What a run is, and what a sweep is: typed records, and the one codec between them and MLflow's tags.

Every tag fmnist writes is named here and nowhere else. `RunFacts.tags()` writes what is known of a run
(a record with only some fields set writes only those: how a run's facts are added to as it goes),
`RunFacts.from_tags()` reads them back, a fact missing from an older run reading as unset. `SweepFacts`
and `JobLine` do the same for a sweep's parent run. `fmnist.tracking` stores and finds them; nothing
else sees a tag. The layout is the store's as earlier releases wrote it: their runs read the same.

To add a fact to every run: a field here, its tag in `_RUN` (or a line in `RunFacts.tags` for a structured
one), and where it is known, set it (fmnist.bookkeeping).
"""

import json
import shlex
from dataclasses import dataclass, field, fields, replace

from fmnist.study import StudyRecord

# A run's facts, one tag each: field -> tag.
_RUN = {
    "fingerprint": "fmnist.fingerprint",  # identity.fingerprint: the same configuration, the same job
    "settings": "fmnist.settings",  # identity.settings_id: the same for every seed of one cell
    "sweep_id": "fmnist.sweep_id",  # the sweep (launch) that ran it last
    "commit": "mlflow.source.git.commit",  # the code that ran it (MLflow's own name: the UI shows it)
    "study_name": "fmnist.study",  # the study a run belongs to (conf/study/<name>.yaml)
    "host": "fmnist.host",
    "pid": "fmnist.pid",
    "device": "fmnist.device",
    "threads": "fmnist.threads",  # torch CPU threads: on a CPU a run is reproducible bit for bit from its seed and this
    "processor": "fmnist.processor",  # the processor class it trained on (vector code, bf16 native or not; a GPU's name)
    "slurm_job": "fmnist.slurm_job",  # the Slurm job (array_task) that last ran it
    "attempt": "fmnist.attempt",  # the lease token of the process that created it: found again if the store's answer is lost
    "parent_run_id": "mlflow.parentRunId",  # MLflow's own: the UI nests a job's run under its sweep's parent
    "superseded_by": "fmnist.superseded_by",  # on a run of a job that another run now stands for
    "failure": "fmnist.failure",  # why it stopped, when it did not finish
}
OVERRIDES = "fmnist.overrides"  # the command line that made the run (Hydra overrides, shell-quoted)
RECORD = "fmnist.study_record"  # the run's StudyRecord (JSON)
CELL, FACTOR, LEVEL, STAGE, TABLE = "fmnist.cell", "fmnist.factor", "fmnist.level", "fmnist.stage", "fmnist.table"  # for the UI
TRIAL, SEARCH, OPTUNA_STUDY = "fmnist.trial", "fmnist.search", "fmnist.optuna_study"
TRIAL_STATE = "fmnist.trial_state"  # COMPLETE or PRUNED, once the trial's run ended
SPACE, VALUES = "fmnist.search_space", "fmnist.trial_values"  # the search's parameters; the trial's values as overrides (JSON)
NOTE = "mlflow.note.content"  # MLflow's own: the description the UI shows on a run's page
# A sweep's parent run.
PARENT = "fmnist.parent"  # marks it: it holds no training; its jobs' runs are its children
SWEEP_COMMAND, VARYING, LAUNCHER = "fmnist.sweep_command", "fmnist.varying", "fmnist.launcher"
SWEEP_LEASE = "fmnist.sweep_lease"  # the lease its launching process holds while it runs: a later launch tells a dead one by it
JOB = "fmnist.job."  # one per job, numbered: its JobLine (JSON)
FAILED_JOBS = "fmnist.failed_jobs"
# A report's summary run, and the experiment.
SUMMARY, REPORT_COMMAND = "fmnist.summary", "fmnist.report_command"
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # the UI opens an experiment on its runs table
MAX_JOB_LINE = 7900  # characters of a job's line (MLflow's tag values are capped at 8000)


@dataclass(frozen=True)
class Trial:
    """A search's trial, as its run knows it."""

    number: int
    search: str = ""
    optuna_study: str = ""
    state: str = ""  # COMPLETE or PRUNED once the run ended; "" while it runs
    space: dict = field(default_factory=dict)  # the search's parameters and ranges
    values: dict = field(default_factory=dict)  # the values it was given, as overrides wrote them


@dataclass(frozen=True)
class RunFacts:
    """What a training run is: who it is, where it belongs, where it ran, how it ended. None: not known (yet)."""

    fingerprint: str | None = None
    settings: str | None = None
    overrides: tuple[str, ...] | None = None
    sweep_id: str | None = None
    commit: str | None = None
    study_name: str | None = None
    study: StudyRecord | None = None
    trial: Trial | None = None
    host: str | None = None
    pid: int | None = None
    device: str | None = None
    threads: int | None = None
    processor: str | None = None
    slurm_job: str | None = None
    attempt: str | None = None
    parent_run_id: str | None = None
    superseded_by: str | None = None
    failure: str | None = None

    def tags(self) -> dict[str, str]:
        """The tags of the facts that are set (and only those)."""
        tags = {tag: str(getattr(self, name)) for name, tag in _RUN.items() if getattr(self, name) is not None}
        if self.overrides is not None:
            tags[OVERRIDES] = shlex.join(self.overrides)
        if self.failure is not None:
            tags[NOTE] = f"Run stopped: {self.failure}" if self.failure else ""
        if self.study is not None:
            last = self.study.readings[-1]
            tags |= {_RUN["study_name"]: self.study.study, RECORD: json.dumps(self.study.to_dict()), CELL: last.cell, FACTOR: last.factor,
                     LEVEL: last.level, TABLE: self.study.table}
            if self.study.stage is not None:
                tags[STAGE] = str(self.study.stage)
        if self.trial is not None:
            tags |= {TRIAL: str(self.trial.number)}
            tags |= {k: v for k, v in ((SEARCH, self.trial.search), (OPTUNA_STUDY, self.trial.optuna_study), (TRIAL_STATE, self.trial.state)) if v}
            tags |= {k: json.dumps(v) for k, v in ((SPACE, self.trial.space), (VALUES, self.trial.values)) if v}
        return tags

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "RunFacts":
        found = {name: tags.get(tag) for name, tag in _RUN.items()}
        for name in ("pid", "threads"):
            found[name] = int(found[name]) if (found[name] or "").isdigit() else None
        found = {k: (v or None) if isinstance(v, str) else v for k, v in found.items()}
        record = tags.get(RECORD)
        trial = None
        if (tags.get(TRIAL) or "").isdigit():
            trial = Trial(int(tags[TRIAL]), tags.get(SEARCH, ""), tags.get(OPTUNA_STUDY, ""), tags.get(TRIAL_STATE, ""),
                          json.loads(tags.get(SPACE) or "{}"), json.loads(tags.get(VALUES) or "{}"))
        return cls(overrides=tuple(shlex.split(tags[OVERRIDES])) if OVERRIDES in tags else None,
                   study=StudyRecord.from_dict(json.loads(record)) if record else None, trial=trial, **found)

    def __or__(self, more: "RunFacts") -> "RunFacts":
        """These facts with those set in `more` added (or replaced)."""
        return replace(self, **{f.name: getattr(more, f.name) for f in fields(more) if getattr(more, f.name) is not None})


def trial_ended(trial: Trial, state: str, reason: str = "") -> dict[str, str]:
    """A trial's run ends: COMPLETE, or PRUNED with the pruner's reason as the run's note."""
    return RunFacts(trial=replace(trial, state=state)).tags() | ({NOTE: reason} if reason else {})


def cleared_failure() -> dict[str, str]:
    """A run taken up again: the reason it stopped no longer holds."""
    return {_RUN["failure"]: "", NOTE: ""}


@dataclass(frozen=True)
class SweepFacts:
    """A sweep: one launch of a multirun, as its parent run records it."""

    sweep_id: str
    command: tuple[str, ...]  # the overrides as typed, sweeps included (loss=ce,mse,nll)
    varying: tuple[str, ...]  # the keys whose values differ between the jobs ("cell" for a study)
    launcher: str
    study: str | None = None
    commit: str = ""
    lease: str = ""  # the launching process's lease file (absent from parents older than it)

    def tags(self) -> dict[str, str]:
        tags = {PARENT: "1", _RUN["sweep_id"]: self.sweep_id, SWEEP_COMMAND: shlex.join(self.command), VARYING: json.dumps(list(self.varying)),
                LAUNCHER: self.launcher, _RUN["commit"]: self.commit}
        return tags | ({_RUN["study_name"]: self.study} if self.study else {}) | ({SWEEP_LEASE: self.lease} if self.lease else {})

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "SweepFacts | None":
        if tags.get(PARENT) != "1":
            return None
        return cls(tags.get(_RUN["sweep_id"], ""), tuple(shlex.split(tags.get(SWEEP_COMMAND, ""))), tuple(json.loads(tags.get(VARYING) or "[]")),
                   tags.get(LAUNCHER, ""), tags.get(_RUN["study_name"]), tags.get(_RUN["commit"], ""), tags.get(SWEEP_LEASE, ""))


@dataclass(frozen=True)
class JobLine:
    """One job's outcome, on its sweep's parent run: trained, resumed, skipped (and which run stands for it), failed."""

    number: int
    overrides: str
    outcome: str  # trained, resumed, skipped, pruned, failed, lost, cancelled
    run_id: str | None = None
    reason: str = ""
    where: str = ""  # for a skipped job: "the store" or the export that holds its run

    def tags(self) -> dict[str, str]:
        entry = {"overrides": self.overrides, "outcome": self.outcome, "run_id": self.run_id}
        entry |= {k: v for k, v in (("reason", self.reason), ("where", self.where)) if v}
        return {f"{JOB}{self.number:04d}": json.dumps(entry)[:MAX_JOB_LINE]}


def job_lines(tags: dict[str, str]) -> list[JobLine]:
    """A parent run's job lines, in job order (a line cut at the tag's length reads as a failed job without details)."""
    lines = []
    for key in sorted(k for k in tags if k.startswith(JOB)):
        number = int(key[len(JOB):])
        try:
            entry = json.loads(tags[key])
        except ValueError:
            entry = {"overrides": "", "outcome": "failed", "reason": "its line was cut"}
        lines.append(JobLine(number, entry.get("overrides", ""), entry.get("outcome", ""), entry.get("run_id"), entry.get("reason", ""),
                             entry.get("where", "")))
    return lines


def failed_jobs(count: int) -> dict[str, str]:
    return {FAILED_JOBS: str(count)}


def summary_tags(command: str) -> dict[str, str]:
    """A report's summary run: it holds no training."""
    return {SUMMARY: "1", REPORT_COMMAND: command}


def is_summary(tags: dict[str, str]) -> bool:
    return SUMMARY in tags


def is_parent(tags: dict[str, str]) -> bool:
    return tags.get(PARENT) == "1"


def tag(fact: str) -> str:
    """The tag of one of a run's facts (RunFacts' field name): what tracking queries by."""
    return _RUN[fact]


def tag_names() -> set[str]:
    """Every tag name fmnist writes (a job line's is JOB followed by its number)."""
    return {*_RUN.values(), OVERRIDES, RECORD, CELL, FACTOR, LEVEL, STAGE, TABLE, TRIAL, SEARCH, OPTUNA_STUDY, TRIAL_STATE, SPACE, VALUES,
            NOTE, PARENT, SWEEP_COMMAND, VARYING, LAUNCHER, JOB, FAILED_JOBS, SUMMARY, REPORT_COMMAND, EXPERIMENT_KIND[0]}
