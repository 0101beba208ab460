"""Optimizers; `conf/optimizer/*.yaml` picks one by name and sets its base learning rate."""

from dataclasses import dataclass

import torch

from fmnist.errors import require, require_choice
from fmnist.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 3e-4  # base learning rate; the schedule multiplies it
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd and rmsprop only

    def __post_init__(self):
        require_choice("optimizer", self.name, OPTIMIZERS)
        require(self.lr > 0, f"optimizer.lr must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")
        require(0.0 <= self.momentum < 1.0, f"optimizer.momentum must be in [0, 1), got {self.momentum}")
        require(
            self.momentum == 0.0 or self.name in ("sgd", "rmsprop"),
            f"optimizer.momentum applies to sgd and rmsprop only, not '{self.name}'; leave it at 0",
        )


@OPTIMIZERS.register("adam")
def adam(params, cfg: OptimizerConfig):
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params, cfg: OptimizerConfig):
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(params, cfg: OptimizerConfig):
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("rmsprop")
def rmsprop(params, cfg: OptimizerConfig):
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.name)(params, cfg)
