"""What every benchmark records next to its figures: the machine, the software, the date."""

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent.parent / "results" / "bench"


def cpu_name() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "unknown CPU")


def describe() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} CPU cores ({cpu_name()}), {gpu}, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads, Python {platform.python_version()}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def write(path: Path, title: str, command: str, body: str) -> Path:
    """Write a Markdown file: title, the command that made it, the machine, then the figures."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\nMade by `{command}` on {describe()}.\n\n{body.rstrip()}\n")
    print(path.read_text())
    return path
