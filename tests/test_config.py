import os
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigAttributeError, ValidationError

from fmnist.config import Config, run_spec, validate
from fmnist.errors import ConfigError
from fmnist.search import as_overrides
from tests.conftest import CONF_DIR, compose_config

GROUPS = ("model", "transform", "loss", "optimizer", "schedule", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_defaults_are_the_studys_table_1_baseline():
    settings = validate(compose_config())
    assert isinstance(settings, Config)
    assert settings.model.name == "resnet18" and settings.transform.augment == []
    assert settings.loss.name == "ce" and settings.optimizer.name == "adam"
    assert settings.optimizer.lr == 3e-4 and settings.schedule.epochs == 5 and settings.schedule.name == "constant"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_of_every_group_composes_and_validates(group, option):
    cfg = compose_config([f"{group}={option}"])
    settings = validate(cfg)
    if group in ("model", "loss", "optimizer", "schedule"):
        assert getattr(settings, group).name == option


SEARCHED_WITH = {"best": ["experiment=best"], "best_fp32": ["experiment=best_fp32"], "fast": ["experiment=fast"], "fast_fp32": ["experiment=fast"], "fast2": ["experiment=fast"], "fast_fp32b": ["experiment=fast_fp32", "model.whiten=false"], "fast_fp32c": ["experiment=fast_fp32"], "fast_fp32d": ["experiment=fast_fp32", "transform.augment=[flip,lowres]"], "mlp_regularisation": ["model=mlp"]}  # the command each search file's header gives (fast_fp32d: with lowres applied, as in each of its trials, since its lowres settings are refused without it)


@pytest.mark.parametrize("name", options("search"))
def test_every_search_composes_at_each_end_of_every_range_and_with_every_choice(name):
    base = [f"search={name}", *SEARCHED_WITH[name]]
    settings = validate(compose_config(base))
    assert settings.search.name == name
    for key, param in settings.search.params.items():
        values = param.choices if param.type == "choice" else [int(param.low), int(param.high)] if param.type == "int" else [param.low, param.high]
        for value in values:
            validate(compose_config([*base, *as_overrides({key: value})]))


def test_every_registered_name_has_a_config_file():
    from fmnist.losses import LOSSES
    from fmnist.models import MODELS
    from fmnist.optimizers import OPTIMIZERS
    from fmnist.schedules import SCHEDULES

    for group, registry in (("model", MODELS), ("loss", LOSSES), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        assert options(group) == registry.names()


def test_study_values_per_option():
    assert validate(compose_config(["optimizer=sgd"])).optimizer.lr == 1e-3
    assert validate(compose_config(["transform=flip"])).transform.augment == ["flip"]


def test_wrong_group_option_names_the_valid_ones():
    with pytest.raises(MissingConfigException) as err:
        compose_config(["loss=mes"])
    assert "mse" in str(err.value.options) and "nll" in str(err.value.options)


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.lr=-0.1", "optimizer.lr must be > 0, got -0.1"),
        ("schedule.epochs=0", "schedule.epochs must be >= 1, got 0"),
        ("batch_size=0", "batch_size must be >= 1, got 0"),
        ("loss.name=mes", "unknown loss 'mes'; choose one of: ce, mae, mse, nll"),
        ("device=tpu", "device must be one of"),
        ("data.val_size=0", "data.val_size"),
        ("precision=fp16", "precision must be one of fp32, bf16, auto; got 'fp16'"),
        ("transform.erase.p=0.9", r"transform.erase sets an augmentation that is not applied \(transform.augment is \[\]\)"),
        ("transform.flip.p=2", "transform.flip.p must be in"),
    ],
)
def test_bad_values_are_refused_with_one_sentence(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(["transform=flip", override] if override.startswith("transform.flip") else [override]))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=mlp", "transform=lowres"], "transform.lowres.side=20: model=mlp as configured takes images of 28x28 or more"),
        (["model=vgg", "transform=lowres"], "model=vgg as configured takes images of 24x24 or more; use a side of at least 24"),
    ],
)
def test_a_lowres_side_the_model_cannot_take_is_refused_before_any_run(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(overrides))
    assert validate(compose_config(["model=vgg", "model.channels=[8,16,32,64]", "transform=lowres"])).transform.lowres.side == 20
    assert validate(compose_config(["model=resnet18", "transform=lowres", "transform.lowres.side=12"])).transform.lowres.side == 12


@pytest.mark.parametrize(
    "override,cause,message",
    [
        ("optimizer.lr=fast", ValidationError, "'fast' of type 'str' could not be converted to Float"),
        ("optimizer.lrate=0.1", ConfigAttributeError, "Key 'lrate' not in 'AdamConfig'"),
        ("model.hidden=[8]", ConfigAttributeError, "Key 'hidden' not in 'ResNet18Config'"),
    ],
)
def test_wrong_types_and_unknown_keys_are_refused_at_compose_time(override, cause, message):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config([override])
    assert isinstance(err.value.__cause__, cause) and message in str(err.value.__cause__)


def fingerprint(cfg) -> str:
    return run_spec(cfg).fingerprint


def test_fingerprint_ignores_where_a_run_is_recorded_but_not_what_it_computes():
    base = fingerprint(compose_config())
    assert fingerprint(compose_config()) == base
    assert fingerprint(compose_config(["tracking.uri=sqlite:///elsewhere.db", "device=cpu", "progress=false"])) == base
    assert fingerprint(compose_config(["seed=1"])) != base
    assert fingerprint(compose_config(["loss=mse"])) != base


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local", "slurm"])
def test_launcher_presets_compose(launcher):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert "submitit" in cfg.hydra.launcher._target_ or "joblib" in cfg.hydra.launcher._target_ or launcher == "slurm"
    if launcher == "slurm":
        from hydra.utils import get_class

        from hydra_plugins.fmnist_study_sweeper.slurm_launcher import FmnistSlurmLauncher

        assert get_class(cfg.hydra.launcher._target_) is FmnistSlurmLauncher  # fmnist's own: a cancelled task is its job's outcome
        assert cfg.hydra.launcher.cpus_per_task == 8 and cfg.hydra.launcher.gpus_per_node == 1


def test_threads_are_shared_out_among_parallel_jobs():
    from omegaconf import OmegaConf

    from fmnist.run import threads_per_job

    cores = len(os.sched_getaffinity(0))
    assert threads_per_job(OmegaConf.create({})) is None  # one job at a time: torch's default
    assert threads_per_job(OmegaConf.create({"n_jobs": 2})) == max(1, cores // 2)
    assert threads_per_job(OmegaConf.create({"n_jobs": -1})) == 1
    assert threads_per_job(OmegaConf.create({"n_jobs": 64})) == 1
    submitit = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert threads_per_job(OmegaConf.create({"_target_": submitit, "cpus_per_task": 6})) == 6
    assert threads_per_job(OmegaConf.create({"_target_": submitit, "cpus_per_task": None})) == 1
