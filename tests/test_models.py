import pytest
import torch

from fmnist.errors import ConfigError
from fmnist.models import MODELS, MLPConfig, ModelConfig, ResNet18Config, TrimmedConv, VGGConfig, build_model, from_data


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


def test_vgg_first_convs_sets_the_conv_layers_at_full_resolution_only():
    def convs_at_28(model):
        seen = []
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(lambda m, inp, out: seen.append(out.shape[-1]))
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        return seen

    assert convs_at_28(build_model(VGGConfig(channels=[16, 32]))) == [28, 28, 14, 14]
    assert convs_at_28(build_model(VGGConfig(channels=[16, 32], first_convs=1))) == [28, 14, 14]


def test_vgg_pools_that_keep_an_odd_maps_last_row_and_column_let_it_reach_the_head():
    def reaching(model, stage_end: int):  # which rows and columns of a stage's output the loss depends on
        seen = []
        relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
        relus[stage_end].register_forward_hook(lambda m, inp, out: seen.append(out))
        torch.manual_seed(0)
        out = model(torch.randn(8, 1, 28, 28)).sum()
        grad = torch.autograd.grad(out, seen[0])[0].abs().sum(dim=(0, 1))
        return grad.sum(dim=1).nonzero().flatten().tolist(), grad.sum(dim=0).nonzero().flatten().tolist()

    def net(**kw):
        return build_model(VGGConfig(channels=[8, 8, 8, 8], first_convs=1, dropout=0.0, **kw))

    # the last stage's map is 3x3 (its ReLU is the 7th), the third stage's 7x7 (the 5th)
    assert reaching(net(), 6) == ([0, 1], [0, 1])  # a 2x2 pool on 3x3: its last row and column are computed for nothing
    assert reaching(net(), 4) == (list(range(6)), list(range(6)))
    assert reaching(net(global_pool=True), 6) == ([0, 1, 2], [0, 1, 2])
    assert reaching(net(pool_ceil=True, global_pool=True), 4) == (list(range(7)), list(range(7)))
    assert reaching(net(pool_ceil=True), 6) == ([0, 1, 2, 3], [0, 1, 2, 3])  # 7 -> 4 at the third pool, 4 -> 2 at the last
    assert VGGConfig(channels=[8] * 4, pool_ceil=True).smallest_side() == 17  # transform.lowres must leave the head its 2x2


def test_a_whitened_vgg_starts_from_its_patches_principal_directions_both_ways_and_never_trains_them():
    torch.manual_seed(0)
    images = (torch.rand(64, 28, 28).cumsum(dim=2) * 9).to(torch.uint8)  # horizontal ramps: neighbouring pixels correlate
    net = build_model(VGGConfig(channels=[8, 16], whiten=True))
    from_data(net, VGGConfig(channels=[8, 16], whiten=True), images)
    w = net[0].weight.detach().flatten(1)
    assert torch.equal(w[:4], -w[4:])  # each direction and its negative: a ReLU passes both signs
    assert torch.allclose(w[:4] @ w[:4].T, torch.eye(4), atol=1e-5)
    out = torch.nn.functional.conv2d(images[:, None].float(), net[0].weight[:4]).transpose(0, 1).flatten(1)
    cov = torch.cov(out.double())
    assert torch.all(cov.diagonal().diff() <= 0) and (cov - cov.diag().diag()).abs().max() < 1e-6 * cov[0, 0]  # uncorrelated, largest first
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.5)
    net(images[:8, None].float()).sum().backward()
    optimizer.step()
    after = net.state_dict()
    assert torch.equal(after["0.weight"], before["0.weight"]) and not torch.equal(after["3.weight"], before["3.weight"])
    plain = build_model(VGGConfig(channels=[8, 16]))
    from_data(plain, VGGConfig(channels=[8, 16]), images)  # takes nothing from the data: a learned first conv
    assert plain[0].weight.requires_grad


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
        (VGGConfig, {"first_convs": 3}, "model.first_convs must be 1 or 2"),
        (VGGConfig, {"channels": [32, 64], "whiten": True}, "model.whiten needs an even first width of at most 18"),
        (VGGConfig, {"channels": [15], "whiten": True}, "got 15"),
    ],
)
def test_bad_model_values_are_refused(schema, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        schema(**kwargs)


@pytest.mark.parametrize("name", MODELS.names())
def test_each_model_has_only_its_own_settings(name):
    others = {"mlp": {"hidden", "dropout"}, "vgg": {"channels", "first_convs", "dropout", "pool_ceil", "global_pool", "whiten"}, "resnet18": {"stem", "resize", "trim_taps"}}
    fields = set(MODELS.schema(name).__dataclass_fields__) - {"name"}
    assert fields == others[name]


@pytest.mark.parametrize("side,stride", [(1, 1), (2, 2), (4, 1), (3, 2)])
def test_a_trimmed_conv_is_the_same_function_with_the_same_gradients(side, stride):
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(16, 8, 3, stride=stride, padding=1, bias=True).double()
    trimmed = TrimmedConv(16, 8, 3, stride=stride, padding=1, bias=True).double()
    trimmed.load_state_dict(plain.state_dict())
    x = torch.randn(5, 16, side, side, dtype=torch.double, requires_grad=True)
    for layout in (torch.contiguous_format, torch.channels_last):
        y_plain, y_trim = plain(x.to(memory_format=layout)), trimmed(x.to(memory_format=layout))
        assert torch.allclose(y_plain, y_trim, atol=1e-12)
        g = torch.randn_like(y_plain)
        grads = [torch.autograd.grad(y, [x, m.weight, m.bias], g) for y, m in ((y_plain, plain), (y_trim, trimmed))]
        for a, b in zip(*grads):
            assert torch.allclose(a, b, atol=1e-12)


def test_trimming_keeps_resnet18s_parameters_and_function():
    torch.manual_seed(0)
    trimmed = build_model(ResNet18Config())
    plain = build_model(ResNet18Config(trim_taps=False))
    assert trimmed.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(trimmed.state_dict())
    assert sum(isinstance(m, TrimmedConv) for m in trimmed.modules()) == 16 and not any(isinstance(m, TrimmedConv) for m in plain.modules())
    x = torch.randn(4, 1, 28, 28)
    trimmed.eval(), plain.eval()
    assert torch.allclose(trimmed(x), plain(x), atol=1e-4)
