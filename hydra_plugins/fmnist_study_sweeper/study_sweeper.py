"""Hydra sweeper for `study=<name>`: the study's one-factor-at-a-time cells, crossed with the command line.

A thin adapter: the design comes from `fmnist.study.jobs`. Hydra 1.3 instantiates sweepers only from
the `hydra_plugins` namespace package, hence this file. Batching, launching (basic, joblib, submitit,
Slurm) and the checks of each job's config are BasicSweeper's.
"""

from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override
from hydra.errors import CompactHydraException, HydraException
from omegaconf import OmegaConf, open_dict, read_write

from fmnist.config import validate
from fmnist.errors import ConfigError
from fmnist.identity import semantic_params
from fmnist.study import Composed, StudyConfig, cells, check_command_line, jobs, override_key


@dataclass
class StudySweeperConf:
    _target_: str = "hydra_plugins.fmnist_study_sweeper.study_sweeper.StudySweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="fmnist_study", node=StudySweeperConf, provider="fmnist")


class StudyError(CompactHydraException):
    """Hydra prints a compact exception as its message alone, without a stack trace."""


class StudySweeper(BasicSweeper):
    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        try:
            study: StudyConfig = OmegaConf.to_object(self.config.study)
        except Exception as err:
            raise StudyError(f"the study file is not valid: {str(err).splitlines()[0]}") from None
        if study.name is None:
            raise StudyError("hydra/sweeper=fmnist_study needs a study: add study=<name> (the files in conf/study/)")
        try:
            check_command_line(study, [o.get_key_element() for o in overrides])
        except ConfigError as err:
            raise StudyError(str(err)) from None
        combos = BasicSweeper.split_arguments(overrides, None)[0]
        plans: dict[tuple, list] = {}
        batch = []
        for combo in combos:
            # The design can only depend on what the cells compute; seeds share one plan.
            key = tuple(o for o in combo if override_key(o) != "seed")
            if key not in plans:
                plans[key] = self._plan(study, combo)
            batch += [[*combo, *job.study_overrides()] for job in plans[key]]
        size = max_batch_size or len(batch)
        return [batch[i : i + size] for i in range(0, len(batch), size)]

    def _plan(self, study: StudyConfig, combo: list[str]):
        composed = {cell: self._compose(study, cell, combo) for cell in cells(study)}
        try:
            return jobs(study, composed)
        except ConfigError as err:
            raise StudyError(str(err)) from None

    def _compose(self, study: StudyConfig, cell: str, combo: list[str]) -> Composed:
        """One cell's config as its job will see it: semantic params (study keys aside) and schedule."""
        overrides = [*combo, *study.level(cell).overrides]
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]
            settings = validate(cfg)
        except (ConfigError, HydraException) as err:
            raise StudyError(f"study {study.name}, cell '{cell}' ({' '.join(study.level(cell).overrides) or 'no overrides'}): {err}") from None
        params = {k: v for k, v in semantic_params(OmegaConf.to_container(cfg, resolve=True)).items() if not k.startswith("study.")}
        return Composed(params, settings.schedule)
