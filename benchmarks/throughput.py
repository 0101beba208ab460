"""Training and inference images/s: fmnist's engine against a reference loop written the usual way.

The reference is what most tutorials do: `torchvision.datasets.FashionMNIST` + `DataLoader` +
per-sample `transforms` (ToTensor, RandomHorizontalFlip, RandomCrop, Normalize), fp32. fmnist
holds the data set as one uint8 tensor, slices shuffled batches from it and augments whole batches
at once. Both train the same model with the same batch size, optimizer (AdamW) and augmentation
(flip + 2-pixel crop), side by side in this process.

    python benchmarks/throughput.py [--steps 40] [--models mlp vgg resnet18]
"""

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import machine
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from fmnist.data import SHA256, DataConfig, Split, find_file, load_dataset, locate
from fmnist.engine import evaluate, train_epoch
from fmnist.losses import CrossEntropyConfig, build_loss
from fmnist.models import MODELS, build_model
from fmnist.transforms import FMNIST_MEAN, FMNIST_STD, TransformConfig, build_transform

BATCH_SIZE = 256
AUGMENT = ["flip", "crop"]


def torchvision_copy(folder: Path) -> Path:
    """The raw IDX files where torchvision.datasets.FashionMNIST looks for them (no download)."""
    source = locate(DataConfig(download=False))
    raw = folder / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in SHA256:
        found = find_file(source, name)
        opener = gzip.open if found.suffix == ".gz" else open
        with opener(found, "rb") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return folder


def reference_loaders(root: Path, workers: int) -> tuple[DataLoader, DataLoader]:
    normalize = T.Normalize((FMNIST_MEAN,), (FMNIST_STD,))
    train_tf = T.Compose([T.ToTensor(), T.RandomHorizontalFlip(), T.RandomCrop(28, padding=2), normalize])
    test_tf = T.Compose([T.ToTensor(), normalize])
    train = torchvision.datasets.FashionMNIST(root, train=True, transform=train_tf)
    test = torchvision.datasets.FashionMNIST(root, train=False, transform=test_tf)
    return (
        DataLoader(train, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers),
        DataLoader(test, batch_size=1000, num_workers=workers),
    )


def fresh_model(name: str, channels_last: bool = False, **options) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model(MODELS.schema(name)(**options))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def endless(loader: DataLoader):
    """Batches from epoch after epoch, as a training loop sees them (new workers at each epoch start)."""
    while True:
        yield from loader


def reference_train(name: str, loader: DataLoader, steps: int, warmup: int) -> float:
    model, optimizer = fresh_model(name)
    model.train()
    batches = endless(loader)  # worker start-up happens during the warm-up steps, outside the clock
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        images, labels = next(batches)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * BATCH_SIZE / (time.perf_counter() - start)


@torch.no_grad()
def reference_infer(name: str, loader: DataLoader) -> float:
    model, _ = fresh_model(name)
    model.eval()
    start, seen = time.perf_counter(), 0
    for images, _labels in loader:
        model(images).argmax(1)
        seen += len(images)
    return seen / (time.perf_counter() - start)


def subset(split: Split, n: int) -> Split:
    return Split(split.images[:n], split.labels[:n])


def fmnist_train(name: str, train: Split, steps: int, warmup: int, precision: str, channels_last: bool, **options) -> float:
    model, optimizer = fresh_model(name, channels_last, **options)
    transform = build_transform(TransformConfig(augment=AUGMENT))
    loss_fn = build_loss(CrossEntropyConfig())
    generator = torch.Generator().manual_seed(0)

    def one_pass(n_steps: int) -> None:
        while n_steps > 0:  # epoch after epoch when the steps outnumber one pass over the data
            k = min(n_steps, len(train) // BATCH_SIZE)
            train_epoch(model, optimizer, loss_fn, transform, subset(train, k * BATCH_SIZE), BATCH_SIZE, generator,
                        lambda elapsed: None, epoch=1, progress=False, precision=precision)
            n_steps -= k

    one_pass(warmup)
    start = time.perf_counter()
    one_pass(steps)
    return steps * BATCH_SIZE / (time.perf_counter() - start)


def fmnist_infer(name: str, test: Split, precision: str, channels_last: bool, **options) -> float:
    model, _ = fresh_model(name, channels_last, **options)
    transform, loss_fn = build_transform(TransformConfig()), build_loss(CrossEntropyConfig())
    start = time.perf_counter()
    evaluate(model, test, transform, loss_fn, precision=precision)
    return len(test) / (time.perf_counter() - start)


def measure(name: str, data, loaders: dict, steps: int, repeats: int) -> list[tuple[str, str, float, float]]:
    """(model, loop, train img/s, inference img/s) for the two reference loops and fmnist's ways, each the median of
    `repeats` rounds; within a round every way runs once, in turn, so drift in the machine's speed touches them all alike."""
    conv = name != "mlp"

    def fmnist_way(precision: str, channels_last: bool, **options):
        return (lambda: fmnist_train(name, data.train, steps, 3, precision, channels_last, **options),
                lambda: fmnist_infer(name, data.test, precision, channels_last, **options))

    ways = {
        "reference, DataLoader num_workers=0": (
            lambda: reference_train(name, loaders[0][0], steps, 3), lambda: reference_infer(name, loaders[0][1])),
        "reference, DataLoader num_workers=2": (
            lambda: reference_train(name, loaders[2][0], steps, 3), lambda: reference_infer(name, loaders[2][1])),
    }
    if name == "resnet18":  # the path before trim_taps, measured beside it
        ways["fmnist, fp32, every tap (trim_taps=false)"] = fmnist_way("fp32", False, trim_taps=False)
    ways["fmnist, fp32"] = fmnist_way("fp32", False)
    if conv:
        ways["fmnist, fp32 + channels-last"] = fmnist_way("fp32", True)
    ways["fmnist, bf16 + channels-last"] = fmnist_way("bf16", conv)
    figures: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
    for _ in range(repeats):
        for way, (train, infer) in ways.items():
            figures[way].append((train(), infer()))
    rows = []
    for way, measured in figures.items():
        rows.append((name, way, statistics.median(t for t, _ in measured), statistics.median(i for _, i in measured)))
        print(f"{name:9s} {way:42s} train {rows[-1][2]:8.0f} img/s  inference {rows[-1][3]:8.0f} img/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps of 256 images for conv nets (mlp: 10x)")
    parser.add_argument("--repeats", type=int, default=3, help="each figure is the median of this many measurements")
    parser.add_argument("--models", nargs="+", default=["mlp", "vgg", "resnet18"])
    parser.add_argument("--out", type=Path, default=machine.RESULTS, help="folder for throughput.md (default: results/bench)")
    args = parser.parse_args()

    data = load_dataset(DataConfig(download=False))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fmnist-bench-") as folder:
        root = torchvision_copy(Path(folder))
        loaders = {workers: reference_loaders(root, workers) for workers in (0, 2)}
        for name in args.models:
            rows += measure(name, data, loaders, args.steps * (10 if name == "mlp" else 1), args.repeats)
    command = machine.command_line(f"python benchmarks/throughput.py --steps {args.steps} --repeats {args.repeats} --models "
                                   f"{' '.join(args.models)}", args.out)
    machine.write(args.out / "throughput.md", "Training and inference throughput", command, table(rows, args))


def table(rows: list[tuple[str, str, float, float]], args) -> str:
    setting = (
        f"Processor class: {machine.processor_class()}. Batch {BATCH_SIZE}, AdamW, flip + 2-pixel crop, 28x28 input; each figure "
        f"is the median of {args.repeats} rounds of {args.steps} steps (mlp: {args.steps * 10}) after 3 warm-up steps, the ways "
        "taking turns within a round. Inference: the 10,000 test images in batches of 1,000. The ratio divides each figure by "
        "the faster of the two reference loops."
    )
    lines = [
        setting,
        "",
        "| model | loop | train img/s | ratio | inference img/s | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == name]
        best_train = max(r[2] for r in mine if r[1].startswith("reference"))
        best_infer = max(r[3] for r in mine if r[1].startswith("reference"))
        for _, way, train, infer in mine:
            lines.append(f"| {name} | {way} | {train:,.0f} | {train / best_train:.2f}x | {infer:,.0f} | {infer / best_infer:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
