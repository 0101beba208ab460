import pytest
import torch

from fmnist.errors import ConfigError
from fmnist.models import MODELS, MLPConfig, ModelConfig, ResNet18Config, VGGConfig, build_model


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_does_forward_and_backward_on_a_batch_of_two(name):
    torch.manual_seed(0)
    model = build_model(MODELS.schema(name)())
    x = torch.randn(2, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("stem,resize", [("cifar", 28), ("imagenet", 64)])
def test_resnet18_stem_and_resize_options(stem, resize):
    model = build_model(ResNet18Config(stem=stem, resize=resize))
    first_conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][0]
    assert first_conv.in_channels == 1
    assert first_conv.kernel_size == ((3, 3) if stem == "cifar" else (7, 7))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_resnet18_resize_really_resizes_the_input():
    seen = []
    model = build_model(ResNet18Config(resize=56))
    model[1].conv1.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    model(torch.randn(2, 1, 28, 28))
    assert seen == [torch.Size([2, 1, 56, 56])]


def test_mlp_hidden_widths_are_used():
    model = build_model(MLPConfig(hidden=[7, 5]))
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [7, 5, 10]


@pytest.mark.parametrize(
    "schema,kwargs,message",
    [
        (ModelConfig, {"name": "resnet50"}, "unknown model 'resnet50'; choose one of: mlp, resnet18, vgg"),
        (ResNet18Config, {"stem": "big"}, "model.stem"),
        (ResNet18Config, {"resize": 10}, "model.resize"),
        (MLPConfig, {"dropout": 1.0}, "model.dropout"),
        (VGGConfig, {"channels": [8] * 5}, "at most 4 stages"),
    ],
)
def test_bad_model_values_are_refused(schema, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        schema(**kwargs)


@pytest.mark.parametrize("name", MODELS.names())
def test_each_model_has_only_its_own_settings(name):
    others = {"mlp": {"hidden", "dropout"}, "vgg": {"channels", "dropout"}, "resnet18": {"stem", "resize"}}
    fields = set(MODELS.schema(name).__dataclass_fields__) - {"name"}
    assert fields == others[name]
