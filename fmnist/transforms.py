"""Batched tensor transforms: uint8 images (B, 28, 28) in, normalized floats (B, 1, 28, 28) out.

Augmentations run on the whole batch at once, on the batch's device, and draw their randomness
from an explicit generator. They apply to training batches only, and see how far training has come
(`progress`, 0 to 1), which `lowres` uses: smaller images early on, 28x28 from `until` on.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fmnist.errors import ConfigError, require
from fmnist.registry import Registry

AUGMENTATIONS: Registry = Registry("augmentation")

# Mean and std of the Fashion-MNIST training pixels, scaled to [0, 1].
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530


@dataclass
class FlipConfig:
    p: float = 0.5  # probability of a horizontal flip

    def __post_init__(self):
        require(0.0 <= self.p <= 1.0, f"transform.flip.p must be in [0, 1], got {self.p}")


@dataclass
class CropConfig:
    padding: int = 2  # pixels of zero padding before the random 28x28 crop

    def __post_init__(self):
        require(self.padding >= 0, f"transform.crop.padding must be >= 0, got {self.padding}")


@dataclass
class RotateConfig:
    degrees: float = 10.0  # angles drawn uniformly from [-degrees, degrees]

    def __post_init__(self):
        require(0.0 <= self.degrees <= 180.0, f"transform.rotate.degrees must be in [0, 180], got {self.degrees}")


@dataclass
class LowResConfig:
    side: int = 20  # progressive resizing: training images scaled down to side x side ...
    until: float = 0.5  # ... for this share of training (by steps), 28x28 after it; evaluation is always at 28x28

    def __post_init__(self):
        require(8 <= self.side < 28, f"transform.lowres.side must be in 8..27 pixels, got {self.side}")
        require(0.0 < self.until < 1.0, f"transform.lowres.until must be in (0, 1): the last part of training is at 28x28, got {self.until}")


@dataclass
class EraseConfig:
    p: float = 0.5  # probability that a random rectangle of the image is replaced by noise
    area: list[float] = field(default_factory=lambda: [0.02, 0.25])  # the rectangle's share of the image, [min, max]

    def __post_init__(self):
        require(0.0 <= self.p <= 1.0, f"transform.erase.p must be in [0, 1], got {self.p}")
        require(
            len(self.area) == 2 and 0.0 < self.area[0] <= self.area[1] <= 1.0,
            f"transform.erase.area must be [min, max] with 0 < min <= max <= 1, got {self.area}",
        )


@dataclass
class TransformConfig:
    """Normalization, the augmentations applied (in order, training only), and each one's settings under its name.

    Settings of an augmentation that is not in `augment` would set something that never runs
    (`transform=flip transform.erase.p=0.9`): they are refused, and they are not part of a run's identity.
    """

    augment: list[str] = field(default_factory=list)
    mean: float = FMNIST_MEAN
    std: float = FMNIST_STD
    flip: FlipConfig = field(default_factory=FlipConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    rotate: RotateConfig = field(default_factory=RotateConfig)
    erase: EraseConfig = field(default_factory=EraseConfig)
    lowres: LowResConfig = field(default_factory=LowResConfig)
    eval_flip: bool = False  # test-time augmentation: average the logits of each image and its mirror

    def __post_init__(self):
        for name in self.augment:
            if name not in AUGMENTATIONS:
                raise ConfigError(AUGMENTATIONS.unknown_message(name))
        require(self.std > 0, f"transform.std must be > 0, got {self.std}")
        for name, schema in AUGMENTATIONS.schemas().items():
            if isinstance(getattr(self, name), dict):  # built from plain values (a run's resolved config)
                setattr(self, name, schema(**getattr(self, name)))
            if name not in self.augment and getattr(self, name) != schema():
                listed = ",".join([*self.augment, name])
                raise ConfigError(
                    f"transform.{name} sets an augmentation that is not applied (transform.augment is {self.augment}); "
                    f"add it (transform.augment=[{listed}]) or drop its settings"
                )


def _uniform(n: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device)


@AUGMENTATIONS.register("flip", FlipConfig)
def random_flip(images: torch.Tensor, generator: torch.Generator, cfg: FlipConfig, progress: float = 1.0) -> torch.Tensor:
    flip = _uniform(len(images), generator, images.device) < cfg.p
    return torch.where(flip[:, None, None], images.flip(-1), images)


@AUGMENTATIONS.register("crop", CropConfig)
def random_crop(images: torch.Tensor, generator: torch.Generator, cfg: CropConfig, progress: float = 1.0) -> torch.Tensor:
    pad = cfg.padding
    if pad == 0:
        return images
    n, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=images.device)
    # Two 1-D gathers (rows, then columns) cost half of one 2-D fancy index on the CPU.
    rows = dy[:, None, None] + torch.arange(height, device=images.device)[None, :, None]  # (n, height, 1)
    band = padded.gather(1, rows.expand(n, height, width + 2 * pad))
    cols = dx[:, None, None] + torch.arange(width, device=images.device)[None, None, :]  # (n, 1, width)
    return band.gather(2, cols.expand(n, height, width))


@AUGMENTATIONS.register("rotate", RotateConfig)
def random_rotate(images: torch.Tensor, generator: torch.Generator, cfg: RotateConfig, progress: float = 1.0) -> torch.Tensor:
    n = len(images)
    angles = (2 * _uniform(n, generator, images.device) - 1) * math.radians(cfg.degrees)
    cos, sin, zero = angles.cos(), angles.sin(), torch.zeros_like(angles)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), [n, 1, *images.shape[1:]], align_corners=False)
    return F.grid_sample(images[:, None], grid, align_corners=False, padding_mode="zeros")[:, 0]


@AUGMENTATIONS.register("erase", EraseConfig)
def random_erase(images: torch.Tensor, generator: torch.Generator, cfg: EraseConfig, progress: float = 1.0) -> torch.Tensor:
    # Random erasing (Zhong et al., 2017): a rectangle of random area and aspect ratio, at a random
    # place, filled with uniform noise; built as one mask for the whole batch.
    n, height, width = images.shape
    device = images.device
    low, high = cfg.area
    area = (low + (high - low) * _uniform(n, generator, device)) * height * width
    aspect = torch.exp((2 * _uniform(n, generator, device) - 1) * math.log(3.0))  # 1/3 .. 3, log-uniform
    h = (area * aspect).sqrt().round().clamp(1, height)
    w = (area / aspect).sqrt().round().clamp(1, width)
    top = (_uniform(n, generator, device) * (height - h + 1)).floor()
    left = (_uniform(n, generator, device) * (width - w + 1)).floor()
    rows = torch.arange(height, device=device)[None, :]
    cols = torch.arange(width, device=device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (n, height)
    in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (n, width)
    erase = _uniform(n, generator, device) < cfg.p
    mask = in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]
    noise = torch.rand(images.shape, generator=generator, device=device, dtype=images.dtype)
    return torch.where(mask, noise, images)


@AUGMENTATIONS.register("lowres", LowResConfig)
def low_resolution(images: torch.Tensor, generator: torch.Generator, cfg: LowResConfig, progress: float = 1.0) -> torch.Tensor:
    # Early steps at a lower resolution cost a fraction of the arithmetic; the last part at 28x28 fits the filters to the
    # scale they are evaluated at. Antialiased bilinear, so no pixel is simply dropped.
    if progress >= cfg.until:
        return images
    return F.interpolate(images[:, None], size=(cfg.side, cfg.side), mode="bilinear", antialias=True, align_corners=False)[:, 0]


class BatchTransform:
    """Turns uint8 batches into model input: `train` augments, `eval` only normalizes."""

    def __init__(self, cfg: TransformConfig):
        self.cfg = cfg
        self.augmentations = [(AUGMENTATIONS.get(name), getattr(cfg, name)) for name in cfg.augment]

    def train(self, images: torch.Tensor, generator: torch.Generator, progress: float = 1.0) -> torch.Tensor:
        """`progress`: the share of training done before this batch (0 to 1)."""
        x = images.float().div_(255.0)
        for augment, settings in self.augmentations:
            x = augment(x, generator, settings, progress)
        return self._normalize(x)

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        return self._normalize(images.float().div_(255.0))

    def eval_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The inputs whose logits evaluation averages: the image, and its mirror under `eval_flip`."""
        x = self.eval(images)
        return [x, x.flip(-1)] if self.cfg.eval_flip else [x]

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.cfg.mean) / self.cfg.std).unsqueeze(1)


def build_transform(cfg: TransformConfig) -> BatchTransform:
    return BatchTransform(cfg)


class FromPixels(torch.nn.Module):
    """A trained model as it is registered: raw images in (uint8, N x 28 x 28, as the IDX files hold them), logits out,
    with the run's normalisation inside and its logits averaged over the views evaluation used (the mirror under
    eval_flip), so it scores what its run logged. `classes` names the output columns."""

    def __init__(self, model: torch.nn.Module, cfg: TransformConfig, classes: list[str]):
        super().__init__()
        self.model, self.mean, self.std, self.flip, self.classes = model, cfg.mean, cfg.std, cfg.eval_flip, list(classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images.float() / 255.0 - self.mean) / self.std).unsqueeze(1)
        views = [x, x.flip(-1)] if self.flip else [x]
        return torch.stack([self.model(view).float() for view in views]).mean(0)
