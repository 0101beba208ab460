"""The training loop's options: bf16 autocast, mirrored test-time views, a dataset read once per process."""

import pytest
import torch
from torch import nn

from fmnist.data import Dataset, Split
from fmnist.engine import evaluate, fit, train_epoch
from fmnist.losses import CrossEntropyConfig, build_loss
from fmnist.models import MODELS, build_model
from fmnist.transforms import LowResConfig, TransformConfig, build_transform


def tiny_split(n: int = 64, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), torch.randint(0, 10, (n,), generator=g))


class LeftHalf(nn.Module):
    """Logits from the left half of the image only, so an image and its mirror give different logits."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(28 * 14, 10)

    def forward(self, x):
        return self.linear(x[..., :14].flatten(1))


def test_eval_flip_averages_the_logits_of_each_image_and_its_mirror():
    torch.manual_seed(0)
    model, split = LeftHalf(), tiny_split()
    loss_fn = build_loss(CrossEntropyConfig())
    plain = build_transform(TransformConfig())
    with_flip = build_transform(TransformConfig(eval_flip=True))
    x = plain.eval(split.images)
    with torch.no_grad():
        expected = ((model(x) + model(x.flip(-1))) / 2).argmax(1)
        unflipped = model(x).argmax(1)
    result = evaluate(model, split, with_flip, loss_fn)
    assert torch.equal(result.predictions, expected)
    assert not torch.equal(result.predictions, unflipped)  # the mirror did change some predictions
    assert torch.equal(evaluate(model, split, plain, loss_fn).predictions, unflipped)


@pytest.mark.parametrize("name", ["mlp", "vgg"])
def test_bf16_runs_matmuls_in_bfloat16_and_still_learns(name):
    torch.manual_seed(0)
    model = build_model(MODELS.schema(name)(**({'channels': [8, 16]} if name == 'vgg' else {})))
    if name == "vgg":
        model = model.to(memory_format=torch.channels_last)
    seen = []
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    last.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    split, transform, loss_fn = tiny_split(128), build_transform(TransformConfig()), build_loss(CrossEntropyConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = [
        train_epoch(model, optimizer, loss_fn, transform, split, 32, generator, lambda e: None, epoch, False, precision="bf16")[0]
        for epoch in range(1, 16)
    ]
    assert seen[0] == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32; only the compute is bf16
    assert losses[-1] < 0.5 * losses[0]  # memorizes 128 random images: gradients flow through bf16


def test_fp32_leaves_everything_in_float32():
    model, seen = build_model(MODELS.schema("mlp")()), []
    model[-1].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    evaluate(model, tiny_split(), build_transform(TransformConfig()), build_loss(CrossEntropyConfig()), precision="fp32")
    assert seen == [torch.float32]


def test_training_tells_the_transform_how_far_it_has_come_and_evaluation_stays_at_28x28():
    torch.manual_seed(0)
    model = build_model(MODELS.schema("vgg")(channels=[4, 4, 4, 4]))
    sides = []
    model[0].register_forward_hook(lambda module, args, out: sides.append(args[0].shape[-1]))
    transform = build_transform(TransformConfig(augment=["lowres"], lowres=LowResConfig(side=16, until=0.75)))
    data = Dataset(tiny_split(64), tiny_split(16, seed=1), tiny_split(16, seed=2))
    fit(model, torch.optim.SGD(model.parameters(), lr=0.01), build_loss(CrossEntropyConfig()), lambda elapsed: 0.01, transform, data,
        epochs=2, batch_size=16, generator=torch.Generator().manual_seed(0), progress=False)
    # 2 epochs of 4 steps: steps 0-5 lie before 75% of training, 6-7 from it; each epoch ends with one validation batch
    assert sides == [16] * 4 + [28] + [16] * 2 + [28] * 2 + [28]
