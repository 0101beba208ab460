"""Fashion-MNIST from its four IDX files straight into uint8 tensors, checked on the way in.

Where the files are looked for, in order: `data.root`, $FMNIST_DATA, Debian's
`dataset-fashion-mnist` package, and the download cache (filled from the official mirror when
there is a network). `python -m fmnist.data` finds (or fetches) and checks them.
"""

import gzip
import hashlib
import math
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from fmnist.errors import DataError, require

ENV_VAR = "FMNIST_DATA"
DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fmnist"
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

IMAGE_SIDE = 28
NUM_CLASSES = 10
# split -> (images file, labels file, number of examples)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
# SHA-256 of each file's decompressed bytes (the official release's content).
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
IDX_UINT8 = 0x08


@dataclass
class DataConfig:
    root: str | None = None  # folder with the four IDX files (.gz or raw); None searches
    val_size: int = 5000  # held out of the 60k training images; drives the learning curves
    split_seed: int = 0  # fixes which images are held out, independent of the run's seed
    train_size: int | None = None  # use only this many training images (quick runs); None = all
    test_size: int | None = None  # use only the first N test images; None = all 10,000
    verify: bool = True  # check counts and checksums against the official release
    download: bool = True  # fetch from the official mirror if no copy is found

    def __post_init__(self):
        require(0 < self.val_size < 60_000, f"data.val_size must be in 1..59999, got {self.val_size}")
        for key in ("train_size", "test_size"):
            value = getattr(self, key)
            require(value is None or value >= 1, f"data.{key} must be >= 1 or null, got {value}")


@dataclass
class Split:
    images: torch.Tensor  # (N, 28, 28) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    source: str = ""  # the folder the IDX files were read from

    def to(self, device) -> "Dataset":
        return Dataset(self.train.to(device), self.val.to(device), self.test.to(device), self.source)


def split_digest(split: Split) -> str:
    """SHA-256 (first 16 hex digits) of a split's images and labels, in order."""
    digest = hashlib.sha256(split.images.cpu().numpy().tobytes())
    digest.update(split.labels.cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def read_idx(path: Path) -> torch.Tensor:
    """Parse one IDX file of unsigned bytes (gzipped or raw) into a uint8 tensor."""
    return parse_idx(_read_bytes(path), path)


def parse_idx(raw: bytes, path: Path) -> torch.Tensor:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UINT8:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header is cut off")
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise DataError(f"{path} holds {len(raw) - header} data bytes but its header {shape} needs {expected - header}")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"cannot read {path}: {err}; delete it and fetch it again") from err


def find_file(root: Path, name: str) -> Path | None:
    """The IDX file `name` in `root`, raw or gzipped; None if neither is there."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_all_files(root: Path) -> bool:
    return all(find_file(root, name) for name in SHA256)


def candidate_roots(root: str | None) -> list[Path]:
    if root:
        return [Path(root).expanduser()]
    roots = [Path(os.environ[ENV_VAR]).expanduser()] if os.environ.get(ENV_VAR) else []
    return roots + [DEBIAN_ROOT, CACHE_ROOT]


def locate(cfg: DataConfig) -> Path:
    """The first folder that holds all four files; downloads into the cache if allowed."""
    roots = candidate_roots(cfg.root)
    for root in roots:
        if _has_all_files(root):
            return root
    if cfg.root is None and cfg.download:
        try:
            return download(CACHE_ROOT)
        except OSError as err:
            reason = f"the download from {MIRROR} failed ({err})"
    else:
        reason = "downloading is off" if cfg.root is None else f"data.root={cfg.root} is set"
    searched = "\n".join(f"  - {r}" for r in roots)
    raise DataError(
        "Fashion-MNIST not found. Searched for the four IDX files "
        f"({', '.join(n + '[.gz]' for n in SHA256)}) in:\n{searched}\n"
        f"and {reason}. To fix it, do one of:\n"
        "  - sudo apt-get install dataset-fashion-mnist   (Debian/Ubuntu)\n"
        f"  - put the four files in a folder and pass data.root=/that/folder or set {ENV_VAR}\n"
        "  - run `python -m fmnist.data` on a machine with internet access"
    )


def download(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in SHA256:
        target = root / f"{name}.gz"
        if target.is_file():
            continue
        partial = target.with_suffix(".gz.partial")
        print(f"downloading {MIRROR}{name}.gz -> {target}", file=sys.stderr)
        with urllib.request.urlopen(f"{MIRROR}{name}.gz", timeout=30) as response:
            partial.write_bytes(response.read())
        partial.rename(target)  # only complete files get the final name
    return root


def _load_file(root: Path, name: str, shape: tuple, verify: bool) -> tuple[torch.Tensor, Path]:
    """Read one file; with `verify`, insist on the official shape and checksum, else on the item shape."""
    path = find_file(root, name)
    if path is None:
        raise DataError(f"{root / name}[.gz] is missing")
    raw = _read_bytes(path)
    tensor = parse_idx(raw, path)
    got = tuple(tensor.shape)
    if (verify and got != shape) or got[1:] != shape[1:]:
        want = shape if verify else ("N", *shape[1:])
        raise DataError(f"{path} has shape {got}, expected {want}; it is not a Fashion-MNIST file")
    if verify:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != SHA256[name]:
            raise DataError(f"{path} is corrupt: its content's SHA-256 is {digest[:12]}..., expected {SHA256[name][:12]}...")
    return tensor, path


def load_split(root: Path, split: str, verify: bool = True) -> Split:
    images_name, labels_name, count = FILES[split]
    images, images_path = _load_file(root, images_name, (count, IMAGE_SIDE, IMAGE_SIDE), verify)
    labels, labels_path = _load_file(root, labels_name, (count,), verify)
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if labels.numel() and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{labels_path} has label {int(labels.max())}; labels must be 0..{NUM_CLASSES - 1}")
    return Split(images, labels.long())


def split_off_validation(train: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """A fixed random subset of `val_size` images becomes validation; the rest stays training."""
    if val_size >= len(train):
        raise DataError(f"data.val_size={val_size} leaves no training images out of {len(train)}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size].sort().values, order[val_size:].sort().values
    return Split(train.images[train_idx], train.labels[train_idx]), Split(train.images[val_idx], train.labels[val_idx])


def load_dataset(cfg: DataConfig) -> Dataset:
    root = locate(cfg)
    full_train = load_split(root, "train", cfg.verify)
    test = load_split(root, "test", cfg.verify)
    train, val = split_off_validation(full_train, cfg.val_size, cfg.split_seed)
    if cfg.train_size is not None and cfg.train_size > len(train):
        raise DataError(f"data.train_size={cfg.train_size} is more than the {len(train)} training images left after validation "
                        f"(data.val_size={cfg.val_size}); use at most {len(train)}, or leave it unset for all of them")
    if cfg.test_size is not None and cfg.test_size > len(test):
        raise DataError(f"data.test_size={cfg.test_size} is more than the {len(test)} test images; use at most {len(test)}, "
                        "or leave it unset for all of them")
    if cfg.train_size is not None:
        train = Split(train.images[: cfg.train_size], train.labels[: cfg.train_size])
    if cfg.test_size is not None:
        test = Split(test.images[: cfg.test_size], test.labels[: cfg.test_size])
    return Dataset(train, val, test, str(root))


def batches(split: Split, batch_size: int, generator: torch.Generator | None = None):
    """Yield (images, labels) slices; shuffled with `generator` if one is given."""
    n = len(split)
    if generator is None:
        for start in range(0, n, batch_size):
            yield split.images[start : start + batch_size], split.labels[start : start + batch_size]
        return
    order = torch.randperm(n, generator=generator, device=generator.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield split.images[idx], split.labels[idx]


def main() -> None:
    try:
        root = locate(DataConfig(download="--no-download" not in sys.argv[1:]))
        for split in FILES:
            load_split(root, split, verify=True)
    except DataError as err:
        sys.exit(f"error: {err}")
    print(f"Fashion-MNIST OK in {root} (all four files match the official checksums)")


if __name__ == "__main__":
    main()
