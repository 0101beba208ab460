"""Learning-rate schedules as pure functions: (epochs elapsed, config) -> multiplier of the base lr.

`elapsed` is fractional (1.5 = halfway through the second epoch), so every schedule is applied
per optimizer step.
"""

import math
from dataclasses import dataclass

from fmnist.errors import require, require_choice
from fmnist.registry import Registry

SCHEDULES: Registry = Registry("schedule")


@dataclass
class ScheduleConfig:
    name: str = "constant"
    epochs: int = 5
    step_size: int = 2  # step: epochs between decays
    gamma: float = 0.5  # step: multiplier at each decay
    warmup: float = 0.25  # onecycle: fraction of training spent rising to the peak lr

    def __post_init__(self):
        require_choice("schedule", self.name, SCHEDULES)
        require(self.epochs >= 1, f"schedule.epochs must be >= 1, got {self.epochs}")
        require(self.step_size >= 1, f"schedule.step_size must be >= 1, got {self.step_size}")
        require(0.0 < self.gamma <= 1.0, f"schedule.gamma must be in (0, 1], got {self.gamma}")
        require(0.0 < self.warmup < 1.0, f"schedule.warmup must be in (0, 1), got {self.warmup}")


@SCHEDULES.register("constant")
def constant(elapsed: float, cfg: ScheduleConfig) -> float:
    return 1.0


@SCHEDULES.register("step")
def step(elapsed: float, cfg: ScheduleConfig) -> float:
    return cfg.gamma ** math.floor(elapsed / cfg.step_size)


@SCHEDULES.register("cosine")
def cosine(elapsed: float, cfg: ScheduleConfig) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(elapsed / cfg.epochs, 1.0)))


@SCHEDULES.register("onecycle")
def onecycle(elapsed: float, cfg: ScheduleConfig) -> float:
    # Linear rise from 0 to the peak, then linear fall back to 0 at the end of training.
    t = min(elapsed / cfg.epochs, 1.0)
    if t < cfg.warmup:
        return t / cfg.warmup
    return (1.0 - t) / (1.0 - cfg.warmup)


def build_schedule(cfg: ScheduleConfig):
    schedule = SCHEDULES.get(cfg.name)
    return lambda elapsed: schedule(elapsed, cfg)


def depends_on_length(cfg: ScheduleConfig) -> bool:
    """Does the lr at a given point of training depend on the total number of epochs?

    If not (constant, step), the first E epochs of a longer run are exactly an E-epoch run. Found by
    evaluating the schedule, so a newly registered schedule is classified without being declared.
    """
    longer = ScheduleConfig(**{**cfg.__dict__, "epochs": 2 * cfg.epochs})
    short, long = build_schedule(cfg), build_schedule(longer)
    points = [cfg.epochs * i / 64 for i in range(65)]
    return any(short(t) != long(t) for t in points)
