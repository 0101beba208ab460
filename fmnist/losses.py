"""Loss functions on raw logits; `conf/loss/*.yaml` picks one by name."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fmnist.errors import require, require_choice
from fmnist.registry import Registry

LOSSES: Registry = Registry("loss")


@dataclass
class LossConfig:
    """Every loss compares logits with (optionally smoothed) one-hot targets; options differ in how."""

    name: str = ""
    label_smoothing: float = 0.0  # mass spread uniformly over all classes

    def __post_init__(self):
        require_choice("loss", self.name, LOSSES)
        require(
            0.0 <= self.label_smoothing < 1.0,
            f"loss.label_smoothing must be in [0, 1), got {self.label_smoothing}",
        )


@dataclass
class CrossEntropyConfig(LossConfig):
    name: str = "ce"


@dataclass
class NLLConfig(LossConfig):
    name: str = "nll"


@dataclass
class MSEConfig(LossConfig):
    name: str = "mse"


@dataclass
class MAEConfig(LossConfig):
    name: str = "mae"


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    one_hot = F.one_hot(labels, num_classes).float()
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


@LOSSES.register("ce", CrossEntropyConfig)
def cross_entropy(smoothing: float):
    return lambda logits, labels: F.cross_entropy(logits, labels, label_smoothing=smoothing)


@LOSSES.register("nll", NLLConfig)
def negative_log_likelihood(smoothing: float):
    # The study's NLL: the model's log-softmax output fed to the NLL loss.
    def loss(logits, labels):
        log_probs = F.log_softmax(logits, dim=1)
        if smoothing == 0.0:
            return F.nll_loss(log_probs, labels)
        targets = soft_targets(labels, logits.shape[1], smoothing)
        return -(targets * log_probs).sum(dim=1).mean()

    return loss


def _distance_to_targets(distance, smoothing: float):
    """A loss that compares softmax probabilities with (smoothed) one-hot targets."""

    def loss(logits, labels):
        return distance(logits.softmax(dim=1), soft_targets(labels, logits.shape[1], smoothing))

    return loss


@LOSSES.register("mse", MSEConfig)
def mean_squared_error(smoothing: float):
    return _distance_to_targets(F.mse_loss, smoothing)  # L2: punishes big mistakes most


@LOSSES.register("mae", MAEConfig)
def mean_absolute_error(smoothing: float):
    return _distance_to_targets(F.l1_loss, smoothing)


def build_loss(cfg: LossConfig):
    return LOSSES.get(cfg.name)(cfg.label_smoothing)
