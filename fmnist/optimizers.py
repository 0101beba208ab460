"""Optimizers; `conf/optimizer/*.yaml` picks one by name and sets its base learning rate."""

from dataclasses import dataclass

import torch

from fmnist.errors import require, require_choice
from fmnist.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass
class OptimizerConfig:
    """What every optimizer has; each option's subclass sets the study's defaults and adds its own settings."""

    name: str = ""
    lr: float = 3e-4  # base learning rate; the schedule multiplies it
    weight_decay: float = 0.0

    def __post_init__(self):
        require_choice("optimizer", self.name, OPTIMIZERS)
        require(self.lr > 0, f"optimizer.lr must be > 0, got {self.lr}")
        require(self.lr <= FLOAT32_MAX, f"optimizer.lr must be a finite number > 0 and at most {FLOAT32_MAX:.3g} (what float32 "
                                        f"weights can take a step of), got {self.lr}")
        require(self.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "adam"  # weight_decay: L2 added to the gradient


@dataclass
class AdamWConfig(OptimizerConfig):
    name: str = "adamw"
    weight_decay: float = 0.01  # decoupled from the gradient


@dataclass
class MomentumConfig(OptimizerConfig):
    momentum: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        require(0.0 <= self.momentum < 1.0, f"optimizer.momentum must be in [0, 1), got {self.momentum}")


@dataclass
class SGDConfig(MomentumConfig):
    name: str = "sgd"
    lr: float = 1e-3  # the study's SGD rate


@dataclass
class RMSpropConfig(MomentumConfig):
    name: str = "rmsprop"
    lr: float = 1e-4


@OPTIMIZERS.register("adam", AdamConfig)
def adam(params, cfg: AdamConfig):
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw", AdamWConfig)
def adamw(params, cfg: AdamWConfig):
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("sgd", SGDConfig)
def sgd(params, cfg: SGDConfig):
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("rmsprop", RMSpropConfig)
def rmsprop(params, cfg: RMSpropConfig):
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.name)(params, cfg)
