"""The run's schema: one dataclass per config group (kept beside its builder), assembled here.

Hydra composes `conf/` on top of `Config`, which rejects unknown keys and wrong types; `validate`
then builds the dataclasses, whose checks reject bad values before any data is read.
"""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fmnist.data import DataConfig
from fmnist.device import Hardware, settle
from fmnist.errors import ConfigError, require
from fmnist.identity import fingerprint as fingerprint_of
from fmnist.losses import LOSSES, LossConfig
from fmnist.models import MODELS, ModelConfig
from fmnist.optimizers import OPTIMIZERS, OptimizerConfig
from fmnist.schedules import SCHEDULES, ScheduleConfig
from fmnist.search import SearchConfig
from fmnist.study import StudyConfig
from fmnist.transforms import TransformConfig

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "auto")
# Groups whose options are dataclasses of their own (conf/<group>/<option>.yaml names the schema).
OPTION_GROUPS = {"model": MODELS, "loss": LOSSES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"  # relative SQLite paths are taken from the launch folder
    experiment: str = "fmnist"

    def __post_init__(self):
        require(bool(self.experiment.strip()), f"tracking.experiment must name an experiment, got {self.experiment!r}")


@dataclass
class LaunchConfig:
    """Set by fmnist's sweeper on every job of a multirun, never by hand: the sweep the job belongs to, its parent run, and
    the keys whose values differ between the sweep's jobs (what names a job's run). A single run has none."""

    sweep_id: str | None = None
    parent_run_id: str | None = None
    varying: list[str] = field(default_factory=list)


@dataclass
class Config:
    model: ModelConfig = MISSING  # each group's option brings its own schema
    transform: TransformConfig = field(default_factory=TransformConfig)
    loss: LossConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    schedule: ScheduleConfig = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    seed: int = 0
    batch_size: int = 128
    ema: float = 0.0  # weight averaging: after each step the evaluated (and saved) copy moves 1 - ema of the way to the trained weights (less ema early: job.warmed_ema); 0: off
    device: str = "auto"  # auto: CUDA, then MPS, then CPU
    threads: int | None = None  # torch CPU threads; None: cores / parallel jobs (torch's default alone)
    precision: str = "fp32"  # fp32; bf16: autocast matmuls and convolutions to bfloat16; auto: bf16 where the device does it natively
    channels_last: bool = False  # NHWC memory layout for conv weights and activations (faster convs on CPU and GPU)
    compile: bool = False  # torch.compile the model (needs a C++ compiler on CPU; pays a one-off compile time)
    progress: bool = True  # per-batch progress bar (only on a terminal)
    force: bool = False  # train even if an identical run already finished (no skip, no resume)
    checkpoint_dir: str = "checkpoints"  # per-epoch checkpoints of unfinished runs; relative to the launch folder
    exports: list[str] = field(default_factory=list)  # run exports (.csv): their runs count as finished, skipped here too; a
    # search's trials export (<name>_trials.json): a new Optuna study of that search learns its trials first
    rerun_on_code_change: bool = False  # a finished run made by another git commit does not count as done
    lease_seconds: float = 60.0  # a job whose owner has not renewed its lease for this long is taken over
    allow_emulated_bf16: bool = False  # let a study sweep run in bf16 on a CPU that only emulates it (several times slower)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def __post_init__(self):
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(0 <= self.ema < 1, f"ema must be in [0, 1) (0: no averaging; 0.999 averages over about 1000 steps), got {self.ema}")
        require(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}; got '{self.device}'")
        require(self.threads is None or self.threads >= 1, f"threads must be >= 1 or null, got {self.threads}")
        require(self.lease_seconds >= 1, f"lease_seconds must be >= 1, got {self.lease_seconds}")
        odd = [e for e in self.exports if not e.endswith((".csv", "_trials.json"))]
        require(not odd, f"exports takes run exports (.csv) and searches' trials exports (_trials.json), not {', '.join(odd)}")
        require(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}; got '{self.precision}'")
        if "lowres" in self.transform.augment:
            side, smallest = self.transform.lowres.side, self.model.smallest_side()
            require(side >= smallest, f"transform.lowres.side={side}: model={self.model.name} as configured takes images of "
                                      f"{smallest}x{smallest} or more; use a side of at least {smallest}")
        late = [e for e in [*self.study.test_at, *self.study.readings.values()] if e > self.schedule.epochs]
        require(not late, f"study readings or test_at at epochs {late} lie beyond schedule.epochs={self.schedule.epochs}")


def register_schema() -> None:
    """The run's schema, and each option's under `schema/<group>/<option>` for conf/<group>/<option>.yaml."""
    store = ConfigStore.instance()
    store.store(name="fmnist_schema", node=Config)
    for group, registry in OPTION_GROUPS.items():
        for name, schema in registry.schemas().items():
            store.store(group=f"schema/{group}", name=name, node=schema)


def validate(cfg: DictConfig) -> Config:
    """The composed config as checked dataclasses; raises ConfigError with one clear sentence."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(str(err).splitlines()[0]) from None


@dataclass
class RunSpec:
    """One run's configuration, turned from Hydra's once: the checked dataclasses, the same as plain resolved values
    (what is logged, written to config.yaml and fingerprinted), and the device and precision it trains in, settled here
    once (`precision=auto` becomes what the run really does, in both views). Nothing past this point knows omegaconf."""

    settings: Config
    values: dict
    hardware: Hardware

    @property
    def fingerprint(self) -> str:
        """Same semantic config, same fingerprint: a run asked for twice is recognisable."""
        return fingerprint_of(self.values)


def run_spec(cfg: DictConfig) -> RunSpec:
    """The composed config as a RunSpec, its device and precision settled; raises ConfigError with one clear sentence."""
    settings = validate(cfg)
    values = OmegaConf.to_container(cfg, resolve=True)
    hardware = settle(settings.device, settings.precision)
    settings.precision = values["precision"] = hardware.precision
    return RunSpec(settings, values, hardware)
