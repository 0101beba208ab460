import pytest
import torch

from fmnist.errors import ConfigError
from fmnist.optimizers import OPTIMIZERS, AdamConfig, AdamWConfig, OptimizerConfig, SGDConfig, build_optimizer


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_reduces_a_quadratic(name):
    weight = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    momentum = {"momentum": 0.9} if name in ("sgd", "rmsprop") else {}
    optimizer = build_optimizer([weight], OPTIMIZERS.schema(name)(lr=0.05, **momentum))
    start = (weight**2).sum().item()
    for _ in range(20):
        optimizer.zero_grad()
        (weight**2).sum().backward()
        optimizer.step()
    assert (weight**2).sum().item() < start * 0.9


def test_optimizer_settings_reach_torch():
    weight = torch.nn.Parameter(torch.zeros(1))
    sgd = build_optimizer([weight], SGDConfig(lr=1e-3, momentum=0.5, weight_decay=0.1))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["lr"] == 1e-3 and sgd.param_groups[0]["momentum"] == 0.5
    assert sgd.param_groups[0]["weight_decay"] == 0.1
    assert isinstance(build_optimizer([weight], AdamWConfig()), torch.optim.AdamW)


@pytest.mark.parametrize(
    "schema,kwargs,message",
    [
        (AdamConfig, {"lr": -0.1}, "optimizer.lr must be > 0, got -0.1"),
        (AdamConfig, {"lr": 0.0}, "optimizer.lr must be > 0"),
        (AdamWConfig, {"weight_decay": -1.0}, "weight_decay"),
        (SGDConfig, {"momentum": 1.5}, "momentum must be in"),
        (OptimizerConfig, {"name": "lbfgs"}, "unknown optimizer 'lbfgs'; choose one of: adam, adamw, rmsprop, sgd"),
    ],
)
def test_bad_optimizer_values_are_refused(schema, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        schema(**kwargs)


def test_momentum_is_not_a_setting_of_adam():
    with pytest.raises(TypeError):
        AdamConfig(momentum=0.9)
