"""A hyper-parameter search as a config file, run by Optuna, and its winners re-tested on fresh seeds.

`conf/search/<name>.yaml` fills `SearchConfig`: the parameters and their ranges (`Param`), the number
of trials, a seeded sampler and a pruner. Each trial is one job of the sweep (one MLflow run, a child
of the sweep's parent), trained on the search's seed; its objective is validation accuracy at its
last epoch, reported to Optuna after every epoch so the pruner can stop it. The test set plays no
part: a trial never evaluates it. The Optuna study lives in a database beside the tracking store
(a SQLite file beside `mlflow.db`, or `search.storage`), so a killed search continues where it
stopped, and several workers share one study.

`confirm: {top: 3, seeds: 5}` then trains the best configurations on fresh seeds beside the
baseline, as a study of its own (`<search>-confirm`), so the study statistics (paired t over seeds,
Holm, TOST) say what survived, and the report puts each winner's search score beside its confirmed
difference: the winner's curse, measured.

Optuna lives here and in the job's pruning callback; Hydra and MLflow do not.
"""

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from fmnist.errors import ConfigError, require
from fmnist.identity import is_semantic

KINDS = ("float", "int", "choice")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "halving", "none")


def confirmation_study(search: str) -> str:
    """The study a search's winners are trained again in, on fresh seeds beside the baseline."""
    return f"{search}-confirm"


@dataclass
class Param:
    """One searched setting: a float (log or linear scale), an int, or a choice among values (e.g. group options)."""

    type: str = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list = field(default_factory=list)

    def check(self, key: str) -> None:
        require(self.type in KINDS, f"search.params.{key}.type must be one of {', '.join(KINDS)}; got '{self.type}'")
        if self.type == "choice":
            require(len(self.choices) >= 2, f"search.params.{key}: a choice needs two or more choices, got {self.choices}")
            return
        require(self.low is not None and self.high is not None and self.low < self.high,
                f"search.params.{key}: give low < high, got low={self.low}, high={self.high}")
        require(not self.log or self.low > 0, f"search.params.{key}: a log scale needs low > 0, got {self.low}")


@dataclass
class Sampler:
    name: str = "tpe"
    seed: int = 0
    startup_trials: int = 10  # random trials before TPE models the space


@dataclass
class Pruner:
    name: str = "median"  # median: stop a trial below the median of earlier ones at the same epoch; halving: successive halving
    startup_trials: int = 5  # trials that always run to the end before any is pruned
    warmup_epochs: int = 1  # epochs a trial always runs


@dataclass
class Confirm:
    top: int = 0  # the best trials re-trained on fresh seeds (0: no confirmation)
    seeds: int = 5
    first_seed: int = 1000  # fresh seeds: never the search's own


@dataclass
class SearchConfig:
    name: str | None = None  # None: the run is not part of a search
    params: dict[str, Param] = field(default_factory=dict)
    trials: int = 20
    sampler: Sampler = field(default_factory=Sampler)
    pruner: Pruner = field(default_factory=Pruner)
    confirm: Confirm = field(default_factory=Confirm)
    storage: str | None = None  # an Optuna storage URL without a password (else $FMNIST_OPTUNA_STORAGE); None: sqlite beside mlflow.db
    trial_seconds: float | None = None  # a trial's budget of training seconds (its epochs, validation included): one projected past it is pruned
    trial: int | None = None  # set per job by the sweeper: the Optuna trial this run is
    study: str | None = None  # set per job by the sweeper: the Optuna study's name

    def __post_init__(self):
        self.params = {k: v if isinstance(v, Param) else Param(**v) for k, v in self.params.items()}
        if self.name is None:
            return
        require(self.params, f"search {self.name} has no params; give at least one under search.params")
        for key, param in self.params.items():
            param.check(key)
        require(self.trials >= 1, f"search.trials must be >= 1, got {self.trials}")
        require(self.trial_seconds is None or self.trial_seconds > 0, f"search.trial_seconds must be > 0 seconds or null, got {self.trial_seconds}")
        require(self.sampler.name in SAMPLERS, f"search.sampler.name must be one of {', '.join(SAMPLERS)}; got '{self.sampler.name}'")
        require(self.pruner.name in PRUNERS, f"search.pruner.name must be one of {', '.join(PRUNERS)}; got '{self.pruner.name}'")
        for part, key in ((self.sampler, "startup_trials"), (self.pruner, "startup_trials"), (self.pruner, "warmup_epochs")):
            value = getattr(part, key)
            require(value >= 0, f"search.{'sampler' if part is self.sampler else 'pruner'}.{key} must be >= 0, got {value}")
        require(not self.storage or "@" not in self.storage.split("://", 1)[-1].split("/", 1)[0],
                f"search.storage holds a user name and password; give the URL in {STORAGE_ENV} instead (it is never logged)")
        require(self.confirm.top >= 0 and self.confirm.seeds >= 3 or self.confirm.top == 0,
                f"search.confirm needs seeds >= 3 to test its winners (paired t over seeds), got {self.confirm.seeds}")


STORAGE_ENV = "FMNIST_OPTUNA_STORAGE"  # a database URL with its password: read from the environment, never logged


def storage_url(search: SearchConfig, tracking_uri: str) -> str:
    """Where the Optuna study lives: `search.storage`, $FMNIST_OPTUNA_STORAGE, or a SQLite file beside a SQLite tracking store."""
    if search.storage:
        return search.storage
    if os.environ.get(STORAGE_ENV):
        return os.environ[STORAGE_ENV]
    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri[len('sqlite:///'):]).with_name('optuna.db')}"
    raise ConfigError(
        f"search {search.name}: the tracking store is a server, so the Optuna study needs a database of its own beside "
        f"it: set {STORAGE_ENV} (e.g. mysql+pymysql://USER:PASSWORD@HOST/optuna; the local cluster's env file has one)"
    )


def study_name(search: SearchConfig, command: list[str]) -> str:
    """The Optuna study of a search, its fixed settings (the command line's overrides that change what a trial computes) and
    the experiment named on the command line, if one is: the same command continues it, wherever the store, checkpoints and
    sweep folder are, and two experiments sharing one Optuna database never share a study."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in command]
    fixed = sorted(o for o, key in zip(command, keys) if (is_semantic(key) and not key.startswith("hydra")) or key == "tracking.experiment")
    digest = hashlib.sha256(json.dumps([search.name, fixed, {k: vars(v) for k, v in sorted(search.params.items())}]).encode())
    return f"{search.name}-{digest.hexdigest()[:10]}"


def _optuna():
    import optuna  # imported where it is used: a plain run never pays for it

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


OBJECTIVE = "val/acc"  # what a trial scores: validation accuracy at its last epoch
RUN_ATTR = "mlflow_run_id"  # a trial's user attribute: the MLflow run that trained it (the run's tags hold the trial number)


def sampler(search: SearchConfig, number: int = 0):
    """The sampler that draws trial `number`'s values, seeded by the search's seed and that number (trial 0: the seed itself).

    A trial's values are then a function of the seed, its number and the trials before it, whichever process asks for it: a
    sampler seeded once per process would draw a continued search's next trial (or a second worker's first) as the first one
    was drawn, and train it again."""
    optuna, seed = _optuna(), (search.sampler.seed + 1_000_003 * number) % 2**32
    if search.sampler.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.sampler.startup_trials)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(search: SearchConfig, storage: str, name: str):
    """Create the Optuna study, or load it if a killed search left it (same name, same storage)."""
    optuna = _optuna()
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler(search), pruner=pruner(search), direction="maximize",
                                load_if_exists=True)
    study.set_metric_names([OBJECTIVE])  # the Optuna dashboard shows it by name, not as "Objective 0"
    return study


def space_of(params: dict[str, Param]) -> dict[str, dict]:
    """The searched parameters as a trial's run and a trials export record them (plain JSON values)."""
    return json.loads(json.dumps({key: vars(p) for key, p in params.items()}))


def distributions(space: dict[str, dict]) -> dict:
    """Optuna's distribution of each parameter of a recorded space."""
    optuna = _optuna()
    made = {}
    for key, p in space.items():
        if p["type"] == "choice":
            made[key] = optuna.distributions.CategoricalDistribution(p["choices"])
        elif p["type"] == "int":
            made[key] = optuna.distributions.IntDistribution(int(p["low"]), int(p["high"]), log=p["log"])
        else:
            made[key] = optuna.distributions.FloatDistribution(p["low"], p["high"], log=p["log"])
    return made


def as_params(values: dict[str, str], made: dict) -> dict | None:
    """A trial's values as its overrides wrote them (`128`, `[flip,crop]`) as Optuna's params; None if one is missing."""
    if any(key not in values for key in made):
        return None
    optuna = _optuna()
    return {key: next((c for c in d.choices if str(c) == str(values[key])), values[key])
            if isinstance(d, optuna.distributions.CategoricalDistribution) else type(d.low)(float(values[key])) for key, d in made.items()}


def learn(study, earlier: dict, space: dict[str, dict]) -> bool:
    """A new study takes trials finished elsewhere (a trials export's, by number) first, numbered as they were: TPE
    models them, they count towards `trials`, the pruner compares against their curves, the confirmation may pick one.
    One that did not end COMPLETE or PRUNED (or is missing) is taken as FAILED: its number is kept, a new trial asked in
    its place. False where there is nothing to learn, or the study has trials already (it learned them before)."""
    if study.get_trials(deepcopy=False) or not earlier:
        return False
    optuna, made = _optuna(), distributions(space)
    States = optuna.trial.TrialState
    for number in range(max(earlier) + 1):
        t = earlier.get(number)
        params = as_params(t.values, made) if t is not None and t.curve and t.state in ("COMPLETE", "PRUNED") else None
        study.add_trial(optuna.trial.create_trial(state=States.FAIL) if params is None else optuna.trial.create_trial(
            params=params, distributions=made, value=t.curve[-1] if t.state == "COMPLETE" else None, state=getattr(States, t.state),
            intermediate_values=dict(enumerate(t.curve, 1)), user_attrs={RUN_ATTR: t.run_id}))
    return True


def pruner(search: SearchConfig):
    optuna = _optuna()
    if search.pruner.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=search.pruner.startup_trials, n_warmup_steps=search.pruner.warmup_epochs)
    if search.pruner.name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, search.pruner.warmup_epochs))
    return optuna.pruners.NopPruner()


def live(study, trial):
    """A trial that can still be written to: `trial` itself where it was asked here, else a handle on the stored one."""
    return trial if isinstance(trial, _optuna().trial.Trial) else _optuna().trial.Trial(study, trial._trial_id)


def suggest(study, trial, search: SearchConfig) -> dict[str, object]:
    """A trial's values for the searched settings: those it holds, and any it lacks drawn now by its own sampler (a search
    killed between asking for a trial and drawing its values leaves it running with some or none of them)."""
    trial = live(study, trial)
    study.sampler = sampler(search, trial.number)
    values = {}
    for key, p in search.params.items():
        if p.type == "choice":
            values[key] = trial.suggest_categorical(key, list(p.choices))
        elif p.type == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high), log=p.log)
        else:
            values[key] = trial.suggest_float(key, float(p.low), float(p.high), log=p.log)
    return values


def as_overrides(values: dict[str, object]) -> list[str]:
    """Hydra overrides for a trial's values (a group such as `transform` takes its option's name)."""
    return [f"{key}={_text(value)}" for key, value in values.items()]


def _text(value: object) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


class Pruned(Exception):
    """The pruner stopped this trial: a result of the search, not a failure."""


class TrialReporter:
    """In the job: report each epoch's val/acc to the trial's Optuna study, and stop when the pruner says so, or when the
    trial's epochs would train past `search.trial_seconds` at the pace of those so far. The first epoch carries one-time
    costs (kernel set-up, caches; a quarter of an epoch or more on a CPU), so the pace is that of the epochs after it, and
    after the first alone a trial is stopped only when it is projected past the budget by more than that."""

    FIRST_EPOCH_ALLOWANCE = 1.25

    def __init__(self, search: SearchConfig, epochs: int):
        optuna = _optuna()
        storage = os.environ.get(STORAGE_ENV) or search.storage  # the sweeper exports it to its jobs
        study = optuna.load_study(study_name=search.study, storage=storage, pruner=pruner(search))
        trial_id = next(t._trial_id for t in study.get_trials(deepcopy=False) if t.number == search.trial)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.budget, self.epochs = search.trial_seconds, epochs
        self.first: float | None = None  # the first epoch's seconds, if this process trained it (not resumed past it)

    def report(self, epoch: int, value: float, seconds: float) -> None:
        """`seconds`: the training seconds of the trial's epochs so far."""
        self.trial.report(value, epoch)
        if epoch == 1:
            self.first = seconds
        pace = (seconds - self.first) / (epoch - 1) if self.first is not None and epoch > 1 else seconds / epoch
        projected = seconds + pace * (self.epochs - epoch)
        if self.budget is not None and projected > self.budget * (self.FIRST_EPOCH_ALLOWANCE if epoch == 1 else 1):
            raise Pruned(f"pruned after epoch {epoch}: its {self.epochs} epochs would train for about {projected:.0f} s, over "
                         f"search.trial_seconds={self.budget:g}")
        if self.trial.should_prune():
            raise Pruned(f"pruned after epoch {epoch} (val/acc {value:.4f})")
