import pytest
import torch
import torch.nn.functional as F

from fmnist.errors import ConfigError
from fmnist.losses import LOSSES, CrossEntropyConfig, LossConfig, NLLConfig, build_loss


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 10, generator=g, requires_grad=True), torch.randint(0, 10, (16,), generator=g)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_is_a_finite_differentiable_scalar_that_prefers_the_right_class(name, batch):
    logits, labels = batch
    loss_fn = build_loss(LOSSES.schema(name)())
    loss = loss_fn(logits, labels)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    confident = F.one_hot(labels, 10).float() * 20
    assert loss_fn(confident, labels) < loss_fn(-confident, labels)


def test_nll_on_log_softmax_equals_cross_entropy(batch):
    logits, labels = batch
    for smoothing in (0.0, 0.1):
        ce = build_loss(CrossEntropyConfig(label_smoothing=smoothing))(logits, labels)
        nll = build_loss(NLLConfig(label_smoothing=smoothing))(logits, labels)
        torch.testing.assert_close(nll, ce)


def test_mse_compares_softmax_probabilities_with_one_hot_targets(batch):
    logits, labels = batch
    expected = ((logits.softmax(1) - F.one_hot(labels, 10)) ** 2).mean()
    torch.testing.assert_close(build_loss(LOSSES.schema("mse")())(logits, labels), expected)


def test_mae_is_the_mean_absolute_error_of_probabilities(batch):
    logits, labels = batch
    expected = (logits.softmax(1) - F.one_hot(labels, 10)).abs().mean()
    torch.testing.assert_close(build_loss(LOSSES.schema("mae")())(logits, labels), expected)


def test_unknown_loss_and_bad_smoothing_are_refused():
    with pytest.raises(ConfigError, match="unknown loss 'mes'; choose one of: ce, mae, mse, nll"):
        LossConfig(name="mes")
    with pytest.raises(ConfigError, match="label_smoothing"):
        CrossEntropyConfig(label_smoothing=1.0)
