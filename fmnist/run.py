"""Train one configuration and record it in MLflow: `python -m fmnist.run [overrides]`, `-m` to sweep.

With the sweeper (hydra_plugins/fmnist_study_sweeper), the only module that knows Hydra: it turns the
composed config into a `RunSpec` and Hydra's runtime facts (and the sweeper's `launch.*` values) into a
`Launch`, and hands both to `fmnist.job`. A multirun's parent run belongs to the sweeper.
"""

import dataclasses
import os
import re
import signal
import sys
import traceback
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, ConfigCompositionException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from fmnist.bookkeeping import Launch, Terminated
from fmnist.config import OPTION_GROUPS, register_schema, run_spec
from fmnist.credentials import credentials_from_environment, refuse_credentials
from fmnist.engine import Diverged
from fmnist.errors import UserError
from fmnist.job import train
from fmnist.lease import LeaseLost
from fmnist.study import override_key
from fmnist.sweep import new_sweep_id


def config_args(hydra_cfg) -> list[str]:
    """What else the command line needed to find the config: --config-dir folders, hydra.searchpath."""
    folders = [s.path for s in hydra_cfg.runtime.config_sources if s.provider == "command-line" and s.schema == "file"]
    searchpath = [o for o in hydra_cfg.overrides.hydra if o.startswith("hydra.searchpath=")]
    return [f"--config-dir={folder}" for folder in folders] + searchpath


def threads_per_job(launcher_cfg) -> int | None:
    """Cores shared out among parallel jobs, so they do not oversubscribe the CPU."""
    cores = len(os.sched_getaffinity(0))
    if "submitit" in launcher_cfg.get("_target_", ""):
        # submitit: each job gets cpus_per_task cores; unset, all jobs share this machine at once.
        return int(launcher_cfg.get("cpus_per_task") or 1)
    jobs = launcher_cfg.get("n_jobs")  # joblib: n_jobs processes on this machine; -1 = one per core
    if jobs:
        return max(1, cores // (cores if jobs < 0 else jobs))
    return None


def stop_on_sigterm(signum, frame):
    raise Terminated(f"received signal {signum}")


register_schema()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        # Under Slurm, submitit lets SIGTERM pass (a requeue sends it, then SIGKILL): the job keeps its
        # checkpoint and the requeued job resumes it. Ending it here would write an error result that
        # submitit takes for the job's outcome.
        signal.signal(signal.SIGTERM, stop_on_sigterm)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    told = cfg.launch  # what the sweeper told this job of its sweep
    launch = Launch(
        [o for o in hydra_cfg.overrides.task if not override_key(o).startswith("launch.")], told.sweep_id or new_sweep_id(),
        Path(hydra_cfg.runtime.cwd), threads_per_job(hydra_cfg.launcher), config_args(hydra_cfg), hydra_cfg.job.num if multirun else None,
        told.parent_run_id, list(told.varying),
    )
    try:
        return train(run_spec(cfg), launch)
    except (KeyboardInterrupt, Terminated):
        # The run is marked KILLED and keeps its checkpoint; stop the whole sweep, without a traceback.
        sys.exit("interrupted: the run is marked KILLED; run the same command again to resume it (finished jobs are skipped)")
    except LeaseLost as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        sys.exit(f"stopped: {err}")
    except (UserError, Diverged) as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job and carries on with the rest of the sweep
        sys.exit(f"error: {err}")


def unknown_key(full_key: str, schema) -> str:
    """One sentence for a key that is not in the schema, naming the valid ones."""
    settings = ", ".join(sorted(f.name for f in dataclasses.fields(schema))) if dataclasses.is_dataclass(schema) else "?"
    group = full_key.rpartition(".")[0]
    if not group:
        return f"{full_key} is not a setting; the top-level settings are: {settings}"
    registry = OPTION_GROUPS.get(group)
    option = next((n for n, s in registry.schemas().items() if s is schema), None) if registry else None
    where = f"{group}={option}" if option else group
    return f"{full_key} is not a setting of {where}; its settings are: {settings}"


def explain(err: BaseException) -> str | None:
    """Hydra's composition errors as one sentence; None for anything else."""
    # Hydra raises a config file's own error as the context of its ConfigCompositionException.
    cause = err.__cause__ or (err.__context__ if isinstance(err, ConfigCompositionException) else None)
    where = re.match(r"In '([^']+)'", str(err))
    prefix = f"{where.group(1)}.yaml: " if where and where.group(1) != "config" else ""
    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        return f"{group}={option} is not an option; choose one of: {', '.join(sorted(err.options))}"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        return prefix + unknown_key(cause.full_key, cause.object_type)
    if isinstance(cause, ValidationError) and cause.full_key:
        return f"{prefix}{cause.full_key}: {str(cause.msg).splitlines()[0]}"
    if isinstance(cause, OmegaConfBaseException):
        key = f"{cause.full_key}: " if getattr(cause, "full_key", None) else ""
        return f"{prefix}{key}{str(getattr(cause, 'msg', cause)).splitlines()[0]} (a value of the wrong kind: a list where a mapping belongs, or the reverse)"
    if isinstance(err, yaml.YAMLError):
        mark = getattr(err, "problem_mark", None)
        place = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a config file"
        return f"{place} is not valid YAML: {getattr(err, 'problem', None) or str(err).splitlines()[0]}"
    if isinstance(err, CompactHydraException):
        return next((line for line in str(err).splitlines() if line.strip()), str(err))
    return None


def undecodable(err: UnicodeDecodeError) -> str:
    """The config file Hydra was reading when it met a byte that is not UTF-8 (its file source names it)."""
    for frame, _ in traceback.walk_tb(err.__traceback__):
        path = frame.f_locals.get("full_path")
        if isinstance(path, str):
            return path
    return "a config file"


def keep_credentials_out(argv: list[str]) -> None:
    """Credentials reach MLflow through its own environment variables only: never a param, tag, file or printed line."""
    credentials_from_environment()
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "tracking.uri":
            refuse_credentials(value, "tracking.uri on the command line")


def cli() -> None:
    """`python -m fmnist.run`: bad input ends in one line that says what was wrong, not a stack trace."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing: the errors come here
    try:
        keep_credentials_out(sys.argv[1:])
    except UserError as err:
        sys.exit(f"error: {err}")
    try:
        main()
    except LeaseLost as err:
        sys.exit(f"stopped: {err}")
    except (UserError, Diverged) as err:
        sys.exit(f"error: {err}")
    except OSError as err:
        if not err.filename:  # Hydra's MissingConfigException is an OSError too
            message = explain(err)
            if message is None:
                raise
            sys.exit(f"error: {message}")
        sys.exit(f"error: cannot write {err.filename} ({err.strerror}); run from a folder you can write to, or point hydra.run.dir "
                 "(hydra.sweep.dir for -m) at one")
    except UnicodeDecodeError as err:
        sys.exit(f"error: {undecodable(err)} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at position {err.start}); save it as UTF-8")
    except Exception as err:
        message = explain(err)
        if message is None:
            raise
        sys.exit(f"error: {message}")


if __name__ == "__main__":
    cli()
