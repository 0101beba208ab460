"""Arithmetic rate of the conv nets' training step: the FLOPs of one training image (forward and backward,
counted by torch's FlopCounterMode on the model as defined, every 3x3 tap included) times the train
img/s that `throughput.py` measured, per throughput file (one per processor class).

    python benchmarks/flop_rate.py results/bench/throughput.md results/bench/avx2-held/throughput.md

Counting takes seconds and times nothing; the rates are only as good as the throughput files named.
"""

import argparse
import re
from pathlib import Path

import machine
import torch
from torch.utils.flop_counter import FlopCounterMode

from fmnist.models import MODELS, build_model

MODELS_COUNTED = ("vgg", "resnet18")
ROW = re.compile(r"^\| (\w+) \| (fmnist, fp32[^|]*?) \| ([\d,]+) \|", re.M)


def train_flops_per_image(name: str, batch: int = 8) -> float:
    """FLOPs of one training image: forward, loss and backward of a batch, divided by its size."""
    options = {"trim_taps": False} if name == "resnet18" else {}
    model = build_model(MODELS.schema(name)(**options))
    images, labels = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(images), labels).backward()
    return counter.get_total_flops() / batch


def fp32_rows(path: Path) -> dict[tuple[str, str], float]:
    """(model, loop) -> train img/s for the fmnist fp32 loops of a throughput file."""
    return {(m, loop): float(rate.replace(",", "")) for m, loop, rate in ROW.findall(path.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("throughput", nargs="+", type=Path, help="throughput.md files written by benchmarks/throughput.py")
    parser.add_argument("--out", type=Path, default=machine.RESULTS / "flop_rate.md")
    args = parser.parse_args()
    flops = {name: train_flops_per_image(name) for name in MODELS_COUNTED}
    lines = [
        "FLOPs of one training image at 28x28 (forward + backward, the model as defined: ResNet-18 with every 3x3 tap, "
        "though `trim_taps` skips the taps that only see padding): "
        + ", ".join(f"{name} {flops[name] / 1e9:.3f} GFLOP" for name in MODELS_COUNTED) + ".",
        "",
        "| throughput file | processor class | model | loop | train img/s | GFLOP/s | against VGG fp32 |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for path in args.throughput:
        text = path.read_text()
        found = re.search(r"processor class: (.*?)\), no GPU|processor class: ([^)]*)\)", text)
        klass = (found.group(1) or found.group(2)) if found else "not named"
        rows = fp32_rows(path)
        vgg = rows.get(("vgg", "fmnist, fp32"))
        for (model, loop), rate in rows.items():
            if model not in flops:
                continue
            gflops = rate * flops[model] / 1e9
            against = f"{gflops / (vgg * flops['vgg'] / 1e9):.2f}x" if vgg else "—"
            lines.append(f"| {path} | {klass} | {model} | {loop} | {rate:,.0f} | {gflops:,.0f} | {against} |")
    command = f"python benchmarks/flop_rate.py {' '.join(str(p) for p in args.throughput)}"
    if args.out != machine.RESULTS / "flop_rate.md":
        command += f" --out {args.out}"
    machine.write(args.out, "Arithmetic rate of the training step", command, "\n".join(lines))


if __name__ == "__main__":
    main()
