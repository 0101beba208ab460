"""The study's three classifiers. Every model takes (B, 1, 28, 28) floats and returns (B, 10) logits."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fmnist.errors import require, require_choice
from fmnist.registry import Registry

MODELS: Registry = Registry("model")
NUM_CLASSES = 10


@dataclass
class ModelConfig:
    """What every model option has; each option's subclass adds its own settings and defaults."""

    name: str = ""

    def __post_init__(self):
        require_choice("model", self.name, MODELS)

    def smallest_side(self) -> int:
        """The smallest square input the model takes (transform.lowres trains on smaller images than 28x28)."""
        return 1


def _check_dropout(dropout: float) -> None:
    require(0.0 <= dropout < 1.0, f"model.dropout must be in [0, 1), got {dropout}")


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [512, 256])  # widths of the hidden layers
    dropout: float = 0.2  # after each hidden layer

    def __post_init__(self):
        super().__post_init__()
        require(all(h >= 1 for h in self.hidden), f"model.hidden widths must be >= 1, got {self.hidden}")
        _check_dropout(self.dropout)

    def smallest_side(self) -> int:
        return 28  # its first layer is sized for 28x28 pixels


@dataclass
class VGGConfig(ModelConfig):
    name: str = "vgg"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # width of each stage
    first_convs: int = 2  # conv layers of the first stage, at the full 28x28 (1: half its arithmetic and memory traffic)
    dropout: float = 0.2  # in the classifier head
    # A 2x2 pool on an odd side drops its last row and column (7 -> 3, 3 -> 1: 4 of the last stage's 9 values reach the
    # head). pool_ceil keeps them (7 -> 4); global_pool ends the last stage in a max over its whole map instead.
    pool_ceil: bool = False
    global_pool: bool = False
    # The first conv's filters are the principal directions of the training images' 3x3 patches and their negatives,
    # fixed (its batch norm then makes each one's output unit variance: the patches whitened); the rest is learned.
    whiten: bool = False

    def __post_init__(self):
        super().__post_init__()
        require(
            len(self.channels) >= 1 and all(c >= 1 for c in self.channels),
            f"model.channels must be a non-empty list of widths >= 1, got {self.channels}",
        )
        require(not self.whiten or self.channels[0] in range(2, 19, 2),
                f"model.whiten needs an even first width of at most 18 (a 3x3 patch has 9 directions, each taken both ways), "
                f"got {self.channels[0]}")
        require(len(self.channels) <= 4, f"model.channels: at most 4 stages fit 28x28 input, got {self.channels}")
        require(self.first_convs in (1, 2), f"model.first_convs must be 1 or 2 conv layers, got {self.first_convs}")
        _check_dropout(self.dropout)

    def smallest_side(self) -> int:
        # the head is sized for the map that 28x28 leaves after the pools; a smaller image must leave the same one
        return next(side for side in range(1, 29) if self.head_side(side) == self.head_side(28))

    def head_side(self, side: int) -> int:
        """The side of the map an image of `side` pixels leaves the head (0: too small to pool)."""
        for stage in range(len(self.channels)):
            if self.global_pool and stage == len(self.channels) - 1:
                return min(side, 1)
            side = -(-side // 2) if self.pool_ceil else side // 2
        return side


@dataclass
class ResNet18Config(ModelConfig):
    name: str = "resnet18"
    stem: str = "imagenet"  # 'imagenet' (7x7 stride 2 + max-pool) or 'cifar' (3x3 stride 1, no pool)
    resize: int = 28  # input side length; 224 is the study's exact setting
    trim_taps: bool = True  # 3x3 convs on 1x1 maps (and stride-2 ones on 2x2) use only the taps that meet the image

    def __post_init__(self):
        super().__post_init__()
        require(self.stem in ("imagenet", "cifar"), f"model.stem must be 'imagenet' or 'cifar', got '{self.stem}'")
        require(self.resize >= 28, f"model.resize must be >= 28 pixels, got {self.resize}")


@MODELS.register("mlp", MLPConfig)
def mlp(cfg: MLPConfig) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = 28 * 28
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout)]
        width = hidden
    layers.append(nn.Linear(width, NUM_CLASSES))
    return nn.Sequential(*layers)


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@MODELS.register("vgg", VGGConfig)
def vgg(cfg: VGGConfig) -> nn.Module:
    # VGG pattern sized for 28x28: two 3x3 conv-BN-ReLU layers per stage (the first stage: first_convs), then 2x2 max-pool.
    layers: list[nn.Module] = []
    c_in = 1
    for stage, width in enumerate(cfg.channels):
        second = _conv_bn_relu(width, width) if stage or cfg.first_convs == 2 else []
        last = cfg.global_pool and stage == len(cfg.channels) - 1
        layers += _conv_bn_relu(c_in, width) + second + [nn.AdaptiveMaxPool2d(1) if last else nn.MaxPool2d(2, ceil_mode=cfg.pool_ceil)]
        c_in = width
    if cfg.whiten:
        layers[0].weight.requires_grad_(False)  # fixed: from_data() sets it from the training images
    side = cfg.head_side(28)
    head = [
        nn.Flatten(),
        nn.Linear(c_in * side * side, 256),
        nn.ReLU(inplace=True),
        nn.Dropout(cfg.dropout),
        nn.Linear(256, NUM_CLASSES),
    ]
    return nn.Sequential(*layers, *head)


def from_data(net: nn.Module, cfg: ModelConfig, images: torch.Tensor, sample: int = 5_000) -> None:
    """What a model takes from the training images (N, 28, 28) before it trains: a whitened VGG's first conv (model.whiten)
    gets as its 2k filters the k leading eigenvectors of the covariance of 3x3 patches of `sample` of them, and their
    negatives (so a ReLU keeps both signs). Other models take nothing."""
    if not (isinstance(cfg, VGGConfig) and cfg.whiten):
        return
    conv = net[0]
    patches = F.unfold(images[:sample, None].float(), 3).transpose(1, 2).reshape(-1, 9)
    _, vectors = torch.linalg.eigh(torch.cov(patches.T.double()))  # ascending eigenvalues
    leading = vectors.flip(1)[:, : conv.out_channels // 2].T.to(conv.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(torch.cat([leading, -leading]).reshape(conv.weight.shape))


class Resize(nn.Module):
    def __init__(self, side: int):
        super().__init__()
        self.side = side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False)


class TrimmedConv(nn.Conv2d):
    """A 3x3, padding-1 convolution that skips the kernel taps which only ever see zero padding.

    At 28 px ResNet-18's last stage works on 1x1 maps (and its first conv there maps 2x2 to 1x1): of
    the nine taps only the centre (the lower-right four) meet the image, so the conv is a matrix
    product with those taps' weights. Same weights, same function (the other taps' gradients are zero
    either way), but oneDNN's backward pass for these shapes is slow, very slow without AVX-512: on the
    AVX2 code path it spent half of ResNet-18's step there (benchmarks/throughput.py measures both).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = tuple(x.shape[-2:])
        if side == (1, 1) and self.stride == (1, 1):
            taps = self.weight[:, :, 1, 1]
        elif side == (2, 2) and self.stride == (2, 2):
            taps = self.weight[:, :, 1:, 1:].flatten(1)
        else:
            return super().forward(x)
        return F.linear(x.flatten(1), taps, self.bias)[:, :, None, None]


def trim_taps(net: nn.Module) -> None:
    """Every plain 3x3, padding-1 conv of `net` becomes a TrimmedConv (parameters and state dict unchanged)."""
    for module in net.modules():
        if type(module) is nn.Conv2d and module.kernel_size == (3, 3) and module.padding == (1, 1) and module.groups == 1 \
                and module.dilation == (1, 1):
            module.__class__ = TrimmedConv


@MODELS.register("resnet18", ResNet18Config)
def resnet18(cfg: ResNet18Config) -> nn.Module:
    import torchvision  # here, not at the top: importing it costs every command about 3 s (it pulls in torch._dynamo)
    net = torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES)
    if cfg.stem == "imagenet":
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        net.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    if cfg.trim_taps:
        trim_taps(net)
    if cfg.resize == 28:
        return net
    return nn.Sequential(Resize(cfg.resize), net)


def build_model(cfg: ModelConfig) -> nn.Module:
    return MODELS.get(cfg.name)(cfg)
