"""Hydra sweeper for `study=<name>`: the study's one-factor-at-a-time cells, crossed with the command line.

A study that declares `seeds` (fmnist/sequential.py) runs stage after stage in this one command:
stage 1's seeds of every cell, then the combined cell chosen on validation, then more seeds of the
cells still open, until nothing is open or `max` is reached. Results already in the store, or in
the exports named by `exports=`, count: a second invocation continues where the first stopped. With
`seed=...` on the command line (or no design) it is one fixed sweep over those seeds.

The design comes from `fmnist.study.jobs` and the decisions from `fmnist.evidence`. Hydra 1.3
instantiates sweepers only from the `hydra_plugins` namespace package, hence this file. Launching
(basic, joblib, submitit, Slurm) and the checks of each job's config are BasicSweeper's.
"""

import logging
import sys
import time
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException, HydraException
from omegaconf import OmegaConf, open_dict, read_write

from fmnist.config import TrackingConfig, validate
from fmnist.device import settle
from fmnist.errors import ConfigError, UserError
from fmnist.evidence import Evidence, evidence
from fmnist.identity import semantic_params, settings_id
from fmnist.job import dataset
from fmnist.results import Studied, read_export
from fmnist.run import explain
from fmnist.study import (
    BASELINE,
    COMBINED,
    Composed,
    Job,
    StudyConfig,
    StudyRecord,
    cells,
    check_command_line,
    jobs,
    override_key,
    table_of,
)
from fmnist.sweep import Sweep
from fmnist.tracking import Tracker, resolve_uri
from hydra_plugins.fmnist_study_sweeper.slurm_launcher import JobCancelled

log = logging.getLogger(__name__)


@dataclass
class FmnistSweeperConf:
    _target_: str = "hydra_plugins.fmnist_study_sweeper.study_sweeper.FmnistSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


@dataclass
class StudySweeperConf(FmnistSweeperConf):
    _target_: str = "hydra_plugins.fmnist_study_sweeper.study_sweeper.StudySweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="fmnist", node=FmnistSweeperConf, provider="fmnist")
ConfigStore.instance().store(group="hydra/sweeper", name="fmnist_study", node=StudySweeperConf, provider="fmnist")


class StudyError(CompactHydraException):
    """Hydra prints a compact exception as its message alone, without a stack trace."""


class FmnistSweeper(BasicSweeper):
    """Hydra's basic sweeper, checking every job's config against fmnist's schema before anything is created.

    Only when every job is known to be valid does the sweep's parent run open (fmnist.sweep): a typo
    in the tenth job of a sweep leaves no run behind, not even a FAILED parent.
    """

    def sweep(self, arguments: list[str]):
        """The multirun, with its sweep: the store is ready before any job starts, the parent run opens before the first
        job launches (every job checked by then), and closes however the launch ends."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        try:
            tracking = TrackingConfig(**self.config.tracking)  # the store this sweep's parent goes to, checked first
        except UserError as err:
            raise StudyError(str(err)) from None
        self.tracker = Tracker(resolve_uri(tracking.uri, Path(self.config.hydra.runtime.cwd)), tracking.experiment)
        varying = [o.key_or_group for o in overrides if o.is_sweep_override()]
        study = self.config.study.name if "study" in self.config else None
        self.owned = Sweep(self.tracker, list(self.config.hydra.overrides.task), (["cell"] if study else []) + varying,
                           str(self.config.hydra.launcher.get("_target_", "")), study,
                           Path(self.config.hydra.runtime.cwd) / self.config.checkpoint_dir, float(self.config.lease_seconds))
        self.failed: list[JobReturn] = []
        self.cancelled: list[JobReturn] = []  # on Slurm: each one its job's outcome
        interrupted = raised = False
        try:
            return self._sweep(overrides, arguments)
        except KeyboardInterrupt:
            interrupted = raised = True
            raise
        except BaseException:
            raised = True
            raise
        finally:
            self.owned.close(interrupted, raised)

    def _sweep(self, overrides: list[Override], arguments: list[str]):
        self.overrides = self.split_arguments(overrides, self.max_batch_size)
        if not any(self.overrides):
            empty = ", ".join(o.input_line for o in overrides if o.is_sweep_override()) or "the command line"
            raise StudyError(f"this sweep has no jobs ({empty} gives no values); give each swept key at least one value")
        for batch in self.overrides:
            self.validate_batch_is_legal(batch)
            for job in batch:
                self._check_job(job)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns, job_index = [], 0
        while not self.is_done():
            batch = self.get_job_batch()
            returns.append(self._launch(batch, job_index, stop=False))
            job_index += len(batch)
        self._raise_failures(job_index)
        return returns

    def _launch(self, batch: list[list[str]], job_index: int, stop: bool = True):
        """Launch a batch; its failed jobs are kept for the summary, which ends the sweep now if `stop` (a study's next
        stage needs every result) or once every batch has run."""
        results = self._launch_each(batch, job_index)
        for number, result in enumerate(results, job_index):
            if isinstance(result._return_value, JobCancelled):
                self.cancelled.append(result)
                self.owned.record_cancelled(number, self._shown(result.overrides), str(result._return_value), result._return_value.slurm_job)
            elif result.status == JobStatus.FAILED:
                self.failed.append(result)
        if stop:
            self._raise_failures(job_index + len(batch), stopping=True)
        return results

    def _raise_failures(self, launched: int, stopping: bool = False) -> None:
        """One sentence for the jobs that failed (each its reason, the first few listed), after every other job ran; the
        jobs cancelled on Slurm are their own outcome (said, not a failure), except where the next stage needs them."""
        cancelled = ""
        if self.cancelled:
            shown = "; ".join(f"{self._shown(r.overrides)} ({r._return_value.slurm_job})" for r in self.cancelled[:3])
            more = f" and {len(self.cancelled) - 3} more" if len(self.cancelled) > 3 else ""
            cancelled = f"{len(self.cancelled)} of {launched} job(s) cancelled on Slurm before they finished — {shown}{more}"
        if self.cancelled and not self.failed:
            said = f"{cancelled}; the other jobs ran. Run the same command again to run the cancelled ones (finished jobs are skipped)"
            if stopping:
                raise StudyError(f"{said}; the study's next stage needs every job of this one")
            log.warning(said)
            self.owned.summary = said
        if not self.failed:
            return
        shown = [f"{self._shown(r.overrides)}: {_reason(r._return_value)}" for r in self.failed[:3]]
        more = f"; and {len(self.failed) - 3} more (each job's outcome is on the sweep's parent run)" if len(self.failed) > 3 else ""
        also = f"; and {cancelled}" if cancelled else ""
        raise StudyError(f"{len(self.failed)} of {launched} job(s) failed — {'; '.join(shown)}{more}{also}. The other jobs ran; run the "
                         f"same command again to retry the {'failed and cancelled' if cancelled else 'failed'} ones (finished jobs are skipped)")

    def _launch_each(self, batch: list[list[str]], job_index: int):
        """Launch a batch and return every job's result, failed ones included (a search tells Optuna about those)."""
        self.owned.open()  # once, before the first job: every job is valid by now
        told = self.owned.job_overrides()
        jobs = [[*job, *told] for job in batch]
        if QUIET_TRACKER not in sys.warnoptions:  # read when the resource tracker starts, with the first parallel launch
            # A worker killed mid-job leaves its semaphores to multiprocessing's resource tracker, which reclaims them and
            # warns at exit, after the sweep's last line.
            sys.warnoptions.append(QUIET_TRACKER)
        for attempt in range(1, WORKER_RETRIES + 1):
            try:
                return self.launcher.launch(jobs, initial_job_idx=job_index)
            except BrokenExecutor as err:
                log.warning(f"a worker process died ({_reason(err)}), and with it the jobs the launcher was running; launching the batch "
                            f"of {len(jobs)} again (try {attempt + 1}): finished jobs are skipped, the others resume from their checkpoints")
        # A job that kills its worker each time: found by running the batch's jobs one at a time.
        return [self._alone(job, job_index + i) for i, job in enumerate(jobs)]

    def _alone(self, job: list[str], number: int) -> JobReturn:
        for _ in range(2):
            try:
                return self.launcher.launch([job], initial_job_idx=number)[0]
            except BrokenExecutor as err:
                died = err
        reason = f"its worker process died each time it ran, alone too ({_reason(died)}): killed, or out of memory?"
        self.owned.record_failed(number, self._shown(job), reason, job)
        return JobReturn(overrides=job, status=JobStatus.FAILED, _return_value=RuntimeError(reason))

    def _shown(self, overrides) -> str:
        """A job as a person reads it: the overrides that differ between the sweep's jobs (all of them if none do)."""
        own = [o for o in overrides if not o.startswith(("++study.", "launch."))]
        return " ".join([o for o in own if override_key(o) in self.owned.facts.varying] or own)

    def _check_job(self, job: list[str]) -> None:
        """One sentence, naming the job, for what would stop it: a value fmnist's schema refuses (optimizer.lr=-1,
        data.val_size=70000), a device that is not here, a data set that is missing or corrupt."""
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]
            settings = validate(cfg)
            settle(settings.device, settings.precision)
            dataset(settings.data)  # read and verified once; jobs in this process reuse it
        except (UserError, HydraException) as err:
            if not isinstance(err, UserError) and explain(err) is None:
                raise
            message = err if isinstance(err, UserError) else explain(err)
            raise StudyError(f"job {' '.join(o for o in job if not o.startswith('++study.'))}: {message}") from None


@dataclass
class Table:
    """One table of a sequential sweep: a combination of the command line's other overrides (e.g. one model)."""

    combo: list[str]
    jobs: list[Job]  # every cell's job, cells read from one run sharing it
    table: str  # its identity (the baseline run's settings)


class StudySweeper(FmnistSweeper):
    def _study(self, overrides: list[Override]) -> StudyConfig:
        try:
            study: StudyConfig = OmegaConf.to_object(self.config.study)
        except Exception as err:
            cause = err.__cause__ or err.__context__
            message = str(cause) if isinstance(cause, UserError) else str(err).splitlines()[0]
            raise StudyError(f"the study file is not valid: {message}") from None
        try:
            check_command_line(study, [o.get_key_element() for o in overrides])
        except ConfigError as err:
            raise StudyError(str(err)) from None
        return study

    def _sweep(self, overrides: list[Override], arguments: list[str]):
        if self.config.search.name is not None:
            return self._search(overrides)
        study = self._study(overrides)
        if study.name is None or study.seeds is None or study.cells or study.combine or any(o.get_key_element() == "seed" for o in overrides):
            returns = super()._sweep(overrides, arguments)  # a plain or fixed sweep: split_arguments below
            if study.name is not None and self.owned.parent is not None:
                children = self.tracker.children(self.owned.parent.run_id)
                self._describe(_Results(self.config, study, self.tracker), sorted({r.facts.study.table for r in children if r.facts.study}))
            return returns
        return self._stages(study, overrides)

    # ----- a search: trials asked of Optuna, launched, told; then its winners confirmed -----

    def _search(self, overrides: list[Override]):
        from hydra_plugins.fmnist_study_sweeper.search_runner import SearchRunner

        combos = BasicSweeper.split_arguments(overrides, None)[0]
        if len(combos) != 1:
            raise StudyError("a search explores one configuration's space: sweep other settings (a,b) in searches of their own")
        try:
            search = OmegaConf.to_object(self.config.search)
        except Exception as err:
            cause = err.__cause__ or err.__context__
            raise StudyError(f"the search file is not valid: {cause if isinstance(cause, UserError) else str(err).splitlines()[0]}") from None
        try:
            return SearchRunner(self, search, combos[0]).run()
        except UserError as err:
            raise StudyError(str(err)) from None

    # ----- a fixed sweep: the cells over the seeds given -----

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        study = self._study(overrides)
        if study.name is None:
            return BasicSweeper.split_arguments(overrides, max_batch_size)
        combos = BasicSweeper.split_arguments(overrides, None)[0]
        plans: dict[tuple, tuple[list[Job], str]] = {}
        batch = []
        for combo in combos:
            # The design can only depend on what the cells compute; seeds share one plan.
            key = tuple(o for o in combo if override_key(o) != "seed")
            if key not in plans:
                plans[key] = self._plan(study, combo)
            planned, table = plans[key]
            batch += [[*combo, *job.study_overrides(table)] for job in planned]
        size = max_batch_size or len(batch)
        return [batch[i : i + size] for i in range(0, len(batch), size)]

    def _plan(self, study: StudyConfig, combo: list[str]) -> tuple[list[Job], str]:
        """The jobs of the cells this sweep runs, and the table they belong to (from every cell of the design)."""
        whole = replace(study, cells=[], combine=[])
        composed = {cell: self._compose(whole, cell, combo) for cell in cells(whole)}
        if study.combine:
            composed[COMBINED] = self._compose(study, COMBINED, combo)
        try:
            return jobs(study, composed), table_of(study, composed)
        except ConfigError as err:
            raise StudyError(str(err)) from None

    def _compose(self, study: StudyConfig, cell: str, combo: list[str]) -> Composed:
        """One cell's config as its job will see it: semantic params (study keys aside), schedule and settings."""
        overrides = [*combo, *study.level(cell).overrides]
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]
            settings = validate(cfg)
            hardware = settle(settings.device, settings.precision)
            cfg.precision = hardware.precision  # as the job will settle `auto` on this host: the table is named by what runs
            if hardware.why and settings.precision == "bf16" and not settings.allow_emulated_bf16:
                reason = hardware.why.removeprefix("precision=bf16: ").split(",")[0]
                raise ConfigError(
                    f"precision=bf16: {reason}, so every run of this study would take several times longer than in fp32 "
                    "(days for a conv-net table); run it on a host with native bf16 (AVX-512-BF16 or AMX), or use precision=auto "
                    "or fp32 (a new table: runs never pool across precisions), or add allow_emulated_bf16=true to run it anyway"
                )
        except (ConfigError, HydraException) as err:
            message = str(err) if isinstance(err, ConfigError) else explain(err) or str(err).strip().splitlines()[0]
            raise StudyError(f"study {study.name}, cell '{cell}' ({' '.join(study.level(cell).overrides) or 'no overrides'}): {message}") from None
        plain = OmegaConf.to_container(cfg, resolve=True)
        params = {k: v for k, v in semantic_params(plain).items() if not k.startswith("study.")}
        return Composed(params, settings.schedule, settings_id(plain))

    # ----- a sequential sweep: stage after stage -----

    def _stages(self, study: StudyConfig, overrides: list[Override]):
        tables = []
        for combo in BasicSweeper.split_arguments(overrides, None)[0]:
            planned, table = self._plan(study, combo)
            tables.append(Table(combo, planned, table))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        store = _Results(self.config, study, self.tracker)
        returns, job_index, last_counts, stage, took = [], 0, None, 0, None
        most = len(study.seeds.looks()) + (1 if study.factors else 0)  # the combined cell runs a stage after the first
        while True:
            batch, counts = [], []
            for t in tables:
                ev = store.evidence(t, study)
                batch += self._next(study, t, ev)
                counts.append(store.count(t))
            self._describe(store, [t.table for t in tables])
            if not batch:
                break
            if counts == last_counts:
                raise StudyError(
                    f"study {study.name}: the last stage's jobs finished but added no results to the table (were they skipped as "
                    "runs of another commit? then add rerun_on_code_change=true); stopping instead of running them again"
                )
            last_counts = counts
            self.validate_batch_is_legal(batch)
            stage += 1
            pace = f"; the last took {took[0] / 60:.1f} min for {took[1]} run(s), so about {took[0] / took[1] * len(batch) / 60:.0f} min for " \
                "this one at that pace" if took else ""
            log.info(f"study {study.name}: launch {stage} (of at most {most}): {len(batch)} run(s), {job_index} done before it{pace}")
            start = time.monotonic()
            returns.append(self._launch(batch, job_index))  # failed jobs end the sweep here: the next stage needs their results
            took = (time.monotonic() - start, len(batch))
            job_index += len(batch)
        for t in tables:
            ev = store.evidence(t, study)
            if ev is not None:
                log.info(_summary(ev, t))
        return returns

    def _next(self, study: StudyConfig, t: Table, ev: Evidence | None) -> list[list[str]]:
        """The jobs the table needs next: stage 1's cells, then each open cell's seeds for the next stage (the combined
        cell, chosen on validation at the end of stage 1, on the seeds after the first stage's)."""
        have = {c: set(runs.by_seed) for c, runs in ev.cells.items()} if ev else {}
        done = ev.outcome.stages_done if ev else 0
        if done == 0:
            return _missing(t, t.jobs, {cell: list(range(study.seeds.first)) for job in t.jobs for cell in job.readings}, have, stage=1)
        wanted = ev.next_runs()
        batch = _missing(t, t.jobs, {c: s for c, s in wanted.items() if c != COMBINED}, have, done + 1)
        if COMBINED in wanted:
            batch += self._combined(study, t, ev, wanted[COMBINED], done + 1)
        return batch

    def _combined(self, study: StudyConfig, t: Table, ev: Evidence, seeds: list[int], stage: int) -> list[list[str]]:
        chosen = ev.combination
        ran = ev.cells.get(COMBINED)
        if ran is not None:
            chosen = list(ran.levels)  # the combination was chosen once, on the first stage
        combined = replace(study, combine=chosen)
        planned, _ = self._plan(combined, t.combo)
        have = set(ran.by_seed) if ran is not None else set()
        choice = f"study.combine=[{','.join(chosen)}]"
        return [[*t.combo, choice, *job.study_overrides(t.table, stage), f"seed={seed}"] for job in planned for seed in seeds
                if seed not in have]

    def _describe(self, store: "_Results", tables: list[str]) -> None:
        """The parent's Overview: each of the sweep's tables as it stands (what `python -m fmnist.report` prints)."""
        from fmnist.report.study_table import Options, table_text  # matplotlib and the report: only for studies

        texts = []
        try:
            for table in tables:
                found = store.studied(table)
                if any(r.cell == BASELINE for r in found.results):
                    texts.append(table_text(found, sorted(found.results, key=lambda r: r.start_time), "python -m fmnist.report", Options())[0])
            if texts:
                self.owned.describe("\n\n".join(texts))
        except Exception as err:  # a view: it must never cost the sweep its runs
            log.warning(f"could not write the study's table into the sweep's parent run ({type(err).__name__}: {err}); the runs are unaffected")


class _Results:
    """The table's finished results so far: in the store (read once per run) and in the exports named by `exports=`."""

    def __init__(self, config, study: StudyConfig, tracker: Tracker):
        base = Path(config.hydra.runtime.cwd)
        self.tracker = tracker
        self.study = study
        self.read: dict[str, Studied] = {}
        self.exported = Studied([], {})
        for path in (p for p in config.exports if p.endswith(".csv")):  # a search's _trials.json is the search runner's
            self.exported = self.exported + read_export(Path(base, path))

    def studied(self, table: str) -> Studied:
        found = Studied([r for r in self.exported.results if r.study == self.study.name and r.table == table], self.exported.records)
        runs = self.tracker.table_runs(self.study.name, table)
        self.read |= self.tracker.read_results([run for run in runs if run.run_id not in self.read])
        for run in runs:
            found = found + self.read[run.run_id]
        return found

    def count(self, t: Table) -> int:
        return len(self.studied(t.table).results)

    def evidence(self, t: Table, study: StudyConfig) -> Evidence | None:
        found = self.studied(t.table)
        if not any(r.cell == BASELINE for r in found.results):
            return None
        ordered = sorted(found.results, key=lambda r: r.start_time)
        facts = StudyRecord(study.name, t.table, (), study.choice, study.margin, study.seeds, tuple(study.ordered), None, tuple(t.combo),
                            study.effect)
        return evidence(ordered, facts)


def _missing(t: Table, planned: list[Job], wanted: dict[str, list[int]], have: dict[str, set[int]], stage: int) -> list[list[str]]:
    """A job per (run, seed) that some cell it stands for wants and lacks."""
    jobs = []
    for job in planned:
        seeds = sorted({s for cell in job.readings for s in wanted.get(cell, []) if s not in have.get(cell, ())})
        jobs += [[*t.combo, *job.study_overrides(t.table, stage), f"seed={seed}"] for seed in seeds]
    return jobs


def _summary(ev: Evidence, t: Table) -> str:
    decided = ", ".join(f"{name}: {d.verdict}" + (f" (stage {d.stage})" if d.stage else "") for name, d in ev.outcome.decisions.items())
    return f"study {ev.record.study} {' '.join(t.combo)}: {ev.outcome.stages_done} stage(s); {decided}"


WORKER_RETRIES = 3  # launches of a batch whose worker processes keep dying, before its jobs run one at a time


QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


def _reason(err) -> str:
    """The first sentence of an error (a worker's death is explained at length)."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text.split(". ")[0].rstrip(".")[:300]
