import pytest
import torch

from fmnist.errors import ConfigError
from fmnist.transforms import (
    AUGMENTATIONS,
    FMNIST_MEAN,
    FMNIST_STD,
    CropConfig,
    EraseConfig,
    FlipConfig,
    LowResConfig,
    RotateConfig,
    TransformConfig,
    build_transform,
    random_crop,
    random_erase,
)


@pytest.fixture
def images():
    return torch.randint(0, 256, (8, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def denormalize(x):
    return (x[:, 0] * FMNIST_STD + FMNIST_MEAN) * 255


def test_eval_only_normalizes(images):
    out = build_transform(TransformConfig(augment=["flip", "crop", "rotate"])).eval(images)
    assert out.shape == (8, 1, 28, 28) and out.dtype == torch.float32
    torch.testing.assert_close(denormalize(out), images.float(), atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", [n for n in AUGMENTATIONS.names() if n != "lowres"])  # lowres draws nothing: below
def test_every_random_augmentation_keeps_shape_and_is_reproducible_from_its_generator(name, images):
    transform = build_transform(TransformConfig(augment=[name]))
    a, b = transform.train(images, gen(1)), transform.train(images, gen(1))
    assert a.shape == (8, 1, 28, 28)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, transform.train(images, gen(2)))


def test_flip_really_flips(images):
    always = build_transform(TransformConfig(augment=["flip"], flip=FlipConfig(p=1.0))).train(images, gen())
    never = build_transform(TransformConfig(augment=["flip"], flip=FlipConfig(p=0.0))).train(images, gen())
    torch.testing.assert_close(denormalize(always), images.flip(-1).float(), atol=1e-3, rtol=0)
    torch.testing.assert_close(denormalize(never), images.float(), atol=1e-3, rtol=0)
    half = build_transform(TransformConfig(augment=["flip"], flip=FlipConfig(p=0.5))).train(images.repeat(50, 1, 1), gen())
    flipped = (denormalize(half) - images.flip(-1).float().repeat(50, 1, 1)).abs().amax(dim=(1, 2)) < 1e-3
    assert 0.3 < flipped.float().mean() < 0.7


def test_crop_shifts_the_image_within_the_padding():
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, 10, 12] = 255
    transform = build_transform(TransformConfig(augment=["crop"], crop=CropConfig(padding=3)))
    for seed in range(20):
        out = denormalize(transform.train(image, gen(seed)))[0]
        y, x = divmod(int(out.argmax()), 28)
        assert abs(y - 10) <= 3 and abs(x - 12) <= 3 and out.max() > 250


def test_crop_of_a_batch_equals_cropping_each_image_at_its_drawn_offset():
    images = torch.rand(16, 28, 28, generator=gen(1))
    cfg = CropConfig(padding=2)
    out = random_crop(images, gen(5), cfg)
    dy, dx = torch.randint(0, 5, (2, 16), generator=gen(5))  # the same draw the crop made
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    expected = torch.stack([padded[i, dy[i] : dy[i] + 28, dx[i] : dx[i] + 28] for i in range(16)])
    assert torch.equal(out, expected)
    assert not torch.equal(out, images)


def test_rotate_by_zero_degrees_is_the_identity_and_rotation_moves_pixels(images):
    still = build_transform(TransformConfig(augment=["rotate"], rotate=RotateConfig(degrees=0.0))).train(images, gen())
    torch.testing.assert_close(denormalize(still), images.float(), atol=1e-2, rtol=0)
    turned = build_transform(TransformConfig(augment=["rotate"], rotate=RotateConfig(degrees=90.0))).train(images, gen())
    assert (denormalize(turned) - images.float()).abs().mean() > 10


def test_erase_replaces_one_rectangle_of_the_drawn_size_with_noise():
    images = torch.full((64, 28, 28), 0.5)
    out = random_erase(images, gen(3), EraseConfig(p=1.0, area=[0.1, 0.2]))
    changed = out != images
    for mask in changed:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert mask.sum() == box  # one solid rectangle
        assert 0.1 * 784 * 0.7 <= box <= 0.2 * 784 * 1.3  # the area asked for, up to rounding of the sides
    assert ((out >= 0) & (out <= 1)).all()
    untouched = random_erase(images, gen(3), EraseConfig(p=0.0))
    assert torch.equal(untouched, images)


def test_bad_erase_area_is_refused():
    with pytest.raises(ConfigError, match="transform.erase.area must be"):
        EraseConfig(area=[0.3, 0.1])


def test_unknown_augmentation_is_refused():
    with pytest.raises(ConfigError, match="unknown augmentation 'flop'; choose one of: crop, erase, flip, lowres, rotate"):
        TransformConfig(augment=["flop"])


def test_settings_of_an_augmentation_that_is_not_applied_are_refused():
    with pytest.raises(ConfigError, match=r"transform.erase sets an augmentation that is not applied \(transform.augment is \['flip'\]\); "
                                          r"add it \(transform.augment=\[flip,erase\]\) or drop its settings"):
        TransformConfig(augment=["flip"], erase=EraseConfig(p=0.9))
    assert TransformConfig(augment=["flip", "erase"], erase=EraseConfig(p=0.9)).erase.p == 0.9


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_every_augmentation_has_settings_of_its_own_with_defaults(name):
    schema = AUGMENTATIONS.schema(name)
    assert isinstance(getattr(TransformConfig(augment=[name]), name), schema)


def test_lowres_trains_on_smaller_images_until_its_share_of_training_then_on_28x28(images):
    transform = build_transform(TransformConfig(augment=["flip", "lowres"], flip=FlipConfig(p=0.0), lowres=LowResConfig(side=20, until=0.4)))
    early, edge, late = (transform.train(images, gen(), progress) for progress in (0.0, 0.39, 0.4))
    assert early.shape == edge.shape == (8, 1, 20, 20) and late.shape == (8, 1, 28, 28)
    torch.testing.assert_close(denormalize(late), images.float(), atol=1e-3, rtol=0)  # from `until` on: untouched
    flat = build_transform(TransformConfig(augment=["lowres"])).train(torch.full((2, 28, 28), 200, dtype=torch.uint8), gen(), 0.0)
    torch.testing.assert_close(denormalize(flat), torch.full((2, 20, 20), 200.0), atol=1e-3, rtol=0)  # a scaling: no pixel invented
    assert transform.eval(images).shape == (8, 1, 28, 28)  # evaluation never scales


@pytest.mark.parametrize("kwargs,message", [({"side": 28}, "transform.lowres.side must be in 8..27"),
                                            ({"until": 1.0}, r"transform.lowres.until must be in \(0, 1\)")])
def test_bad_lowres_values_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LowResConfig(**kwargs)
