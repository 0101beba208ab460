"""What every benchmark records next to its figures: the machine, the software, the date."""

import os
import platform
import subprocess
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from fmnist.device import CAPS, cpu_facts

RESULTS = Path(__file__).resolve().parent.parent / "results" / "bench"


def cpu_name() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "unknown CPU")


FORCING = CAPS  # hold torch's kernels below what the CPU can do


def processor_class() -> str:
    """The class a figure belongs to: the vector code torch runs here and whether bf16 is native, e.g. `AVX512, native bf16`.

    When the environment holds torch below the hardware (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY), it says so.
    """
    facts = replace(cpu_facts(), capped="")  # said here at more length, with the hardware underneath
    forced = [f"{name}={os.environ[name]}" for name in FORCING if os.environ.get(name)]
    held = f" (code paths held there by {' '.join(forced)} on a CPU that has {hardware_class()})" if forced else ""
    return f"{facts.describe()}{held}"


def command_line(words: str, out: Path) -> str:
    """The command as it was run: with the environment that held torch's code paths, and --out where it was not the default."""
    forced = " ".join(f"{name}={os.environ[name]}" for name in FORCING if os.environ.get(name))
    where = f" --out {out}" if out != RESULTS else ""
    return f"{forced} {words}{where}".strip()


def hardware_class() -> str:
    bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return ("AVX512" if torch.cpu._is_avx512_supported() else "AVX2" if torch.cpu._is_avx2_supported() else "no AVX2") + \
        (" with native bf16" if bf16 else "")


def describe() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} CPU cores ({cpu_name()}; processor class: {processor_class()}), {gpu}, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads, Python {platform.python_version()}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def write(path: Path, title: str, command: str, body: str) -> Path:
    """Write a Markdown file: title, the command that made it, the machine, then the figures."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\nMade by `{command}` on {describe()}.\n\n{body.rstrip()}\n")
    print(path.read_text())
    return path
