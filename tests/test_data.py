import gzip

import pytest
import torch

from fmnist.data import DataConfig, Split, batches, load_dataset, load_split, locate, read_idx, split_off_validation
from fmnist.errors import DataError
from tests.conftest import idx_bytes, write_tiny_fmnist


@pytest.mark.parametrize("gz", [True, False])
def test_tiny_idx_files_load_into_uint8_tensors(tmp_path, gz):
    root = write_tiny_fmnist(tmp_path, n_train=40, n_test=20, gz=gz)
    data = load_dataset(DataConfig(root=str(root), val_size=10, verify=False))
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 20)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (28, 28)
    assert data.train.labels.dtype == torch.int64
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    raw = gzip.decompress((root / name).read_bytes()) if gz else (root / name).read_bytes()
    assert torch.equal(read_idx(root / name), torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).reshape(40, 28, 28))


def test_tiny_files_fail_the_official_shape_check_when_verifying(tiny_data):
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz has shape \(64, 28, 28\), expected \(60000, 28, 28\)"):
        load_dataset(DataConfig(root=str(tiny_data)))


def test_validation_split_is_deterministic_disjoint_and_seeded(tiny_data):
    full = load_split(tiny_data, "train", verify=False)
    full = Split(torch.arange(64, dtype=torch.uint8)[:, None, None].expand(64, 28, 28), full.labels)
    train_a, val_a = split_off_validation(full, 16, seed=0)
    train_b, val_b = split_off_validation(full, 16, seed=0)
    _, val_c = split_off_validation(full, 16, seed=1)
    ids = lambda s: set(s.images[:, 0, 0].tolist())  # noqa: E731
    assert ids(val_a) == ids(val_b) and ids(val_a) != ids(val_c)
    assert ids(train_a).isdisjoint(ids(val_a)) and len(ids(train_a) | ids(val_a)) == 64


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda raw: b"\x00\x00\x09\x03" + raw[4:], "bad magic number"),
        (lambda raw: raw[:-5], "holds 50171 data bytes but its header"),
        (lambda raw: raw[:6], "truncated"),
    ],
)
def test_corrupt_files_are_refused_naming_the_file(tiny_data, corrupt, message):
    path = tiny_data / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(corrupt(gzip.decompress(path.read_bytes()))))
    with pytest.raises(DataError, match=message) as err:
        load_dataset(DataConfig(root=str(tiny_data), val_size=8, verify=False))
    assert str(path) in str(err.value)


def test_broken_gzip_label_out_of_range_and_count_mismatch_are_refused(tiny_data):
    labels = tiny_data / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(torch.full((64,), 10))))
    with pytest.raises(DataError, match="has label 10; labels must be 0..9"):
        load_dataset(DataConfig(root=str(tiny_data), val_size=8, verify=False))
    labels.write_bytes(gzip.compress(idx_bytes(torch.zeros(63))))
    with pytest.raises(DataError, match="holds 64 images but .* holds 63 labels"):
        load_dataset(DataConfig(root=str(tiny_data), val_size=8, verify=False))
    labels.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read .*train-labels-idx1-ubyte.gz"):
        load_dataset(DataConfig(root=str(tiny_data), val_size=8, verify=False))


def test_missing_data_says_where_it_looked_and_how_to_fix_it(tmp_path):
    with pytest.raises(DataError) as err:
        locate(DataConfig(root=str(tmp_path / "nowhere")))
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "apt-get install dataset-fashion-mnist" in message


def test_batches_cover_every_example_once_and_shuffle_with_the_generator(tiny_data):
    split = load_split(tiny_data, "train", verify=False)
    plain = torch.cat([labels for _, labels in batches(split, 10)])
    assert torch.equal(plain, split.labels)
    order = lambda seed: torch.cat([img[:, 0, 0] for img, _ in batches(split, 10, torch.Generator().manual_seed(seed))])  # noqa: E731
    assert torch.equal(order(3), order(3)) and not torch.equal(order(3), order(4))
    assert sorted(order(3).tolist()) == sorted(split.images[:, 0, 0].tolist())


@pytest.mark.slow
def test_real_data_set_loads_with_official_shapes_and_checksums(real_data_root):
    data = load_dataset(DataConfig(root=str(real_data_root)))
    assert (len(data.train), len(data.val), len(data.test)) == (55_000, 5_000, 10_000)
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10
    assert abs(data.train.images.float().mean().item() / 255 - 0.286) < 0.002


@pytest.mark.slow
def test_a_single_changed_byte_in_the_real_data_is_caught_by_the_checksum(real_data_root, tmp_path):
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        src = real_data_root / f"{name}.gz"
        raw = bytearray(gzip.decompress(src.read_bytes()) if src.exists() else (real_data_root / name).read_bytes())
        if name == "t10k-images-idx3-ubyte":
            raw[5000] ^= 0xFF
        (tmp_path / name).write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is corrupt"):
        load_dataset(DataConfig(root=str(tmp_path)))
