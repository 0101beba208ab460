"""Learning-rate schedules as pure functions: (epochs elapsed, config) -> multiplier of the base lr.

`elapsed` is fractional (1.5 = halfway through the second epoch), so every schedule is applied
per optimizer step.
"""

import math
from dataclasses import dataclass, replace

from fmnist.errors import require, require_choice
from fmnist.registry import Registry

SCHEDULES: Registry = Registry("schedule")


@dataclass
class ScheduleConfig:
    """Every schedule runs for `epochs`; each option's subclass adds the settings of its shape."""

    name: str = ""
    epochs: int = 5

    def __post_init__(self):
        require_choice("schedule", self.name, SCHEDULES)
        require(self.epochs >= 1, f"schedule.epochs must be >= 1, got {self.epochs}")


@dataclass
class ConstantConfig(ScheduleConfig):
    name: str = "constant"  # the study: a fixed learning rate


@dataclass
class StepConfig(ScheduleConfig):
    name: str = "step"
    step_size: int = 2  # epochs between decays
    gamma: float = 0.5  # multiplier at each decay

    def __post_init__(self):
        super().__post_init__()
        require(self.step_size >= 1, f"schedule.step_size must be >= 1, got {self.step_size}")
        require(0.0 < self.gamma <= 1.0, f"schedule.gamma must be in (0, 1], got {self.gamma}")


@dataclass
class CosineConfig(ScheduleConfig):
    name: str = "cosine"  # from the base lr down to 0 over all epochs


@dataclass
class OneCycleConfig(ScheduleConfig):
    name: str = "onecycle"
    warmup: float = 0.25  # fraction of training spent rising to the peak lr

    def __post_init__(self):
        super().__post_init__()
        require(0.0 < self.warmup < 1.0, f"schedule.warmup must be in (0, 1), got {self.warmup}")


@SCHEDULES.register("constant", ConstantConfig)
def constant(elapsed: float, cfg: ConstantConfig) -> float:
    return 1.0


@SCHEDULES.register("step", StepConfig)
def step(elapsed: float, cfg: StepConfig) -> float:
    return cfg.gamma ** math.floor(elapsed / cfg.step_size)


@SCHEDULES.register("cosine", CosineConfig)
def cosine(elapsed: float, cfg: CosineConfig) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(elapsed / cfg.epochs, 1.0)))


@SCHEDULES.register("onecycle", OneCycleConfig)
def onecycle(elapsed: float, cfg: OneCycleConfig) -> float:
    # Linear rise from 0 to the peak, then linear fall back to 0 at the end of training.
    t = min(elapsed / cfg.epochs, 1.0)
    if t < cfg.warmup:
        return t / cfg.warmup
    return (1.0 - t) / (1.0 - cfg.warmup)


def build_schedule(cfg: ScheduleConfig):
    """The multiplier of the base learning rate after `elapsed` epochs (fractional)."""
    schedule = SCHEDULES.get(cfg.name)
    return lambda elapsed: schedule(elapsed, cfg)


def learning_rate(base_lr: float, cfg: ScheduleConfig):
    """The learning rate after `elapsed` epochs: the configured base rate times the schedule (nanoGPT's get_lr)."""
    factor = build_schedule(cfg)
    return lambda elapsed: base_lr * factor(elapsed)


def depends_on_length(cfg: ScheduleConfig) -> bool:
    """Does the lr at a given point of training depend on the total number of epochs?

    If not (constant, step), the first E epochs of a longer run are exactly an E-epoch run. Found by
    evaluating the schedule, so a newly registered schedule is classified without being declared.
    """
    longer = replace(cfg, epochs=2 * cfg.epochs)
    short, long = build_schedule(cfg), build_schedule(longer)
    points = [cfg.epochs * i / 64 for i in range(65)]
    return any(short(t) != long(t) for t in points)
