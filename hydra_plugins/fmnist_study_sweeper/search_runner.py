"""The study sweeper's search: ask Optuna for trials, launch them as jobs, tell it how they ended; then
train the best on fresh seeds beside the baseline (a study of its own) and register the confirmed best.

A search killed at any point continues with the same command: the Optuna study is loaded from its
database, a trial left RUNNING is launched again (its job resumes from its checkpoint in its own run,
or is skipped if it had finished), and new trials are asked only until `trials` have completed or
been pruned. Jobs are launched as many at a time as the launcher runs in parallel.
"""

import logging
import os
from pathlib import Path

from omegaconf import OmegaConf, open_dict, read_write

from fmnist.bookkeeping import TrialOutcome
from fmnist.config import validate
from fmnist.errors import UserError
from fmnist.identity import settings_id
from fmnist.lease import Busy
from fmnist.ledger import RunFacts, Trial
from fmnist.search import (
    RUN_ATTR,
    STORAGE_ENV,
    SearchConfig,
    as_overrides,
    confirmation_study,
    learn,
    live,
    open_study,
    space_of,
    storage_url,
    study_name,
    suggest,
)
from fmnist.study import override_key
from fmnist.tracking import Tracker, resolve_uri

log = logging.getLogger(__name__)
MAX_FAILURES = 5  # trials in a row that fail (not pruned) before the search stops


class SearchRunner:
    def __init__(self, sweeper, search: SearchConfig, combo: list[str]):
        self.sweeper, self.search = sweeper, search
        self.combo = list(combo)  # search=<name> included: each job composes the search file's settings
        config = sweeper.config
        base = Path(config.hydra.runtime.cwd)
        self.uri = resolve_uri(config.tracking.uri, base)
        self.storage = storage_url(search, self.uri)
        os.environ[STORAGE_ENV] = self.storage  # the jobs find the study here (launchers pass the environment on); never an override
        self.name = study_name(search, self.combo)
        launcher = config.hydra.launcher  # joblib's n_jobs, or a Slurm array's parallelism: trials asked at a time
        self.parallel = max(1, min(search.trials, int(launcher.get("n_jobs") or launcher.get("array_parallelism") or 1)))
        self.tracker: Tracker = sweeper.tracker
        self.job_index = 0

    def run(self):
        for values in self._corners():  # the space composes, every choice of it, before any run
            self.sweeper._check_job([*self.combo, *self._trial_overrides(values, 0)])
        earlier = self._earlier()  # a broken or foreign trials export stops here, before any run
        study = open_study(self.search, self.storage, self.name)
        log.info(f"search {self.search.name}: Optuna study {self.name} in {self._shown_storage()}")
        if learn(study, earlier, space_of(self.search.params)):
            log.info(f"search {self.search.name}: learned {len(earlier)} earlier trials (0-{max(earlier)}) from the trials exports")
        returns = self._trials(study)
        if self.search.confirm.top:
            returns += self._confirm(study)
        return returns

    # ----- trials finished elsewhere: a search continued on another machine from its trials export -----

    def _earlier(self) -> dict:
        """This search's trials in the trials exports named by `exports=` (by number; a later file's record counts)."""
        from fmnist.report.search_table import read_trials

        config = self.sweeper.config
        found = {}
        for path in (Path(config.hydra.runtime.cwd, p) for p in config.exports if p.endswith("_trials.json")):
            searched = read_trials(path)
            if searched.name != self.search.name:
                continue  # another search's: for reports only
            if searched.space != space_of(self.search.params) or searched.study not in ("", self.name):
                raise UserError(f"{path} holds trials of search {searched.name} with another space or other fixed settings than this "
                                "command's; continue it with the search file and command it ran with, or leave it out of exports")
            found |= {t.number: t for t in searched.trials}
        return found

    # ----- trials -----

    def _trials(self, study) -> list:
        import optuna

        States = optuna.trial.TrialState
        returns, failures = [], 0
        relaunched = False
        while True:
            trials = study.get_trials(deepcopy=False)
            ended = [t for t in trials if t.state in (States.COMPLETE, States.PRUNED)]
            if len(ended) >= self.search.trials:
                break
            batch = []
            if not relaunched:  # trials a killed search left running: their jobs resume (or are found finished)
                batch = [t for t in trials if t.state == States.RUNNING][: self.parallel]
                relaunched = not batch
            if not batch:
                running = sum(t.state == States.RUNNING for t in trials)
                wanted = min(self.parallel, self.search.trials - len(ended) - running)
                batch = [study.ask() for _ in range(max(1, wanted))]
            jobs = [[*self.combo, *self._trial_overrides(suggest(study, t, self.search), t.number)]
                    for t in batch]
            results = self.sweeper._launch_each(jobs, self.job_index)
            self.job_index += len(jobs)
            returns.append(results)
            for trial, job, result in zip(batch, jobs, results):
                values = dict(o.split("=", 1) for o in job[len(self.combo):] if not o.startswith("++search."))
                failures = 0 if self._tell(study, trial, values, result) else failures + 1
            if failures >= MAX_FAILURES:
                raise UserError(f"search {self.search.name}: {failures} trials in a row failed; the errors are printed above, and a trial that had a run carries its reason in the fmnist.failure tag")
        return returns

    def _trial_overrides(self, values: dict, number: int) -> list[str]:
        return [*as_overrides(values), f"++search.trial={number}", f"++search.study={self.name}"]

    def _corners(self) -> list[dict]:
        """The midpoint of the space, and with each choice's every value in turn: enough to check that every choice composes."""
        middle = self._midpoint()
        return [middle, *({**middle, key: choice} for key, p in self.search.params.items() if p.type == "choice" for choice in p.choices[1:])]

    def _midpoint(self) -> dict:
        values = {}
        for key, p in self.search.params.items():
            values[key] = p.choices[0] if p.type == "choice" else (int(p.low) if p.type == "int" else (p.low * p.high) ** 0.5 if p.log else (p.low + p.high) / 2)
        return values

    def _tell(self, study, trial, values: dict[str, str], result) -> bool:
        """Tell Optuna how `trial` (asked here, or left running by a killed search) ended, with its MLflow run; False if it failed."""
        import optuna

        number = trial.number
        try:
            outcome = result.return_value
        except Busy:
            return True  # another worker is training it: it tells
        except Exception as err:
            log.warning(f"trial {number} failed: {str(err).splitlines()[0][:300]}")
            study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            return False
        if not isinstance(outcome, TrialOutcome):
            return True
        handle = live(study, trial)
        try:
            handle.set_user_attr(RUN_ATTR, outcome.run_id)  # the dashboard's trial names the MLflow run that trained it
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # a racing worker told it first, and named the run
        if outcome.state == "pruned":
            study.tell(number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        else:
            study.tell(number, self._value(outcome.run_id), skip_if_finished=True)
        facts = Trial(number, self.search.name, self.name, space=space_of(self.search.params), values=values)
        self.tracker.handle(outcome.run_id).add(RunFacts(trial=facts))
        return True

    def _value(self, run_id: str) -> float:
        """The objective: validation accuracy at the trial's last epoch."""
        return self.tracker.history_by_step(run_id, "val/acc")[-1][1]

    # ----- confirmation -----

    def _confirm(self, study) -> list:
        import optuna

        complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        top = sorted(complete, key=lambda t: (-t.value, t.number))[: self.search.confirm.top]
        seeds = range(self.search.confirm.first_seed, self.search.confirm.first_seed + self.search.confirm.seeds)
        base = [o for o in self.combo if override_key(o) != "seed"]
        name = confirmation_study(self.search.name)
        table = self._settings(base)
        cells = {"baseline": []} | {f"trial{t.number}": as_overrides(t.params) for t in top}
        jobs = []
        for cell, values in cells.items():
            epochs = self._epochs([*base, *values])
            quoted = ",".join(repr(v) for v in values)
            described = [] if cell == "baseline" else [f"++study.factors.trial={{{cell}:{{overrides:[{quoted}]}}}}"]
            for seed in seeds:
                jobs.append([*base, *values, f"study.name={name}", *described, f"++study.readings={{{cell}:{epochs}}}", f"++study.table={table}",
                             f"seed={seed}"])
        for job in jobs:
            self.sweeper._check_job(job)
        results = self.sweeper._launch(jobs, self.job_index)
        self.job_index += len(jobs)
        self._register_best(name, table, [f"trial{t.number}" for t in top])
        return [results]

    def _compose(self, overrides: list[str]):
        cfg = self.sweeper.hydra_context.config_loader.load_sweep_config(self.sweeper.config, overrides)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        return cfg

    def _settings(self, overrides: list[str]) -> str:
        return settings_id(OmegaConf.to_container(self._compose(overrides), resolve=True))

    def _epochs(self, overrides: list[str]) -> int:
        return validate(self._compose(overrides)).schedule.epochs

    def _register_best(self, study_name_: str, table: str, cells: list[str]) -> None:
        """The confirmed best on validation (mean val/acc over the fresh seeds), as an MLflow model, registered."""
        runs = [r for r in self.tracker.table_runs(study_name_, table) if r.facts.study is not None]
        by_cell: dict[str, list] = {}
        for run in runs:
            by_cell.setdefault(run.facts.study.cell, []).append(run)
        scored = {cell: sum(r.metrics["val/acc"] for r in members) / len(members) for cell, members in by_cell.items() if cell in cells}
        if not scored:
            return
        best = max(scored, key=scored.get)
        chosen = max(by_cell[best], key=lambda r: r.metrics["val/acc"])  # its seed with the best validation accuracy
        model, example = rebuild(self.tracker, chosen.run_id)
        version = self.tracker.log_model(chosen.run_id, model, example, f"fmnist-{self.search.name}", best)
        log.info(f"search {self.search.name}: registered {best} (run {chosen.run_id}, mean val/acc {scored[best]:.4f}) "
                 f"as model fmnist-{self.search.name} version {version}")

    def _shown_storage(self) -> str:
        from fmnist.credentials import without_credentials

        return without_credentials(self.storage) if "://" in self.storage else self.storage


def rebuild(tracker: Tracker, run_id: str):
    """A finished run's model as it is registered (raw uint8 images in, its normalisation inside, fmnist.transforms.FromPixels),
    in eval mode, and five raw test images as the example."""
    import tempfile

    import torch
    import yaml

    from fmnist.data import DataConfig
    from fmnist.job import dataset
    from fmnist.models import MODELS, build_model
    from fmnist.plots import CLASS_NAMES
    from fmnist.transforms import FromPixels, TransformConfig

    values = yaml.safe_load(tracker.artifact_text(run_id, "config.yaml"))
    model = build_model(MODELS.config(values["model"]))
    with tempfile.TemporaryDirectory(prefix="fmnist-model-") as folder:
        model.load_state_dict(torch.load(tracker.artifact_file(run_id, "model.pt", Path(folder)), weights_only=True))
    data, _ = dataset(DataConfig(**values["data"]))
    return FromPixels(model, TransformConfig(**values["transform"]), CLASS_NAMES).eval(), data.test.images[:5]
