"""Per-epoch checkpoints: everything needed to continue a run exactly where it stopped.

Files are written atomically (a temporary name, then a rename) and read with
`torch.load(..., weights_only=True)`, so a truncated or foreign file is refused, never unpickled.
"""

import os
import shutil
import socket
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from fmnist.errors import NoSpace, UserError, no_space

FORMAT = "fmnist-checkpoint-1"


class CheckpointError(UserError):
    pass


@dataclass
class Checkpoint:
    run_id: str  # the MLflow run the checkpoint belongs to
    fingerprint: str
    epoch: int  # epochs completed
    history: list[dict[str, float]]  # per completed epoch: EpochResult's fields
    model: dict
    optimizer: dict
    generator: torch.Tensor  # state of the run's data/augmentation generator
    global_rng: torch.Tensor  # state of torch's global CPU generator (dropout draws from it)
    averaged: dict | None = None  # the weight average's state (ema > 0); absent from checkpoints written before it


def capture(run_id: str, fingerprint: str, history: list, model: nn.Module, optimizer, generator, averaged: nn.Module | None = None) -> Checkpoint:
    """A checkpoint after the epochs in `history` (EpochResults)."""
    return Checkpoint(
        run_id, fingerprint, len(history), [asdict(r) for r in history], model.state_dict(), optimizer.state_dict(),
        generator.get_state(), torch.get_rng_state(), averaged.state_dict() if averaged is not None else None,
    )


def save(checkpoint: Checkpoint, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of this writer's own: two processes never write into one temporary file.
    partial = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with partial.open("wb") as f:
            torch.save({"format": FORMAT, **checkpoint.__dict__}, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before it takes the checkpoint's name: a crash leaves the old one or the new one
        os.replace(partial, path)  # atomic: a reader sees the old file or the new one, never half of one
    except (OSError, RuntimeError) as err:  # torch reports a full disk as a RuntimeError of its stream writer
        if no_space(err) or shutil.disk_usage(path.parent).free < 1 << 20:
            kept = " (its last checkpoint is kept)" if path.exists() else ""
            raise NoSpace(f"no space left on the disk of the checkpoint folder {path.parent} ({shutil.disk_usage(path.parent).free} "
                          f"bytes free); free some space or set checkpoint_dir to another disk, then run the same command again{kept}") from None
        raise
    finally:
        partial.unlink(missing_ok=True)  # a full disk or a failed write leaves nothing behind
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_partials(path: Path) -> list[Path]:
    """Remove the temporary files of interrupted writes of this checkpoint (only its lease's owner calls this)."""
    found = list(path.parent.glob(f"{path.name}.*.partial"))
    for partial in found:
        partial.unlink(missing_ok=True)
    return found


def load(path: Path) -> Checkpoint:
    """The checkpoint at `path`; CheckpointError if it is unreadable (whose configuration it is, its caller judges)."""
    try:
        raw = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # truncated, not a torch file, or holding objects we refuse to unpickle
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(err).__name__}); it will be ignored") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an fmnist checkpoint; it will be ignored")
    raw.pop("format")
    return Checkpoint(**raw)


def restore(checkpoint: Checkpoint, model: nn.Module, optimizer, generator, averaged: nn.Module | None = None) -> None:
    """Put a run back where its checkpoint left it; CheckpointError if the checkpoint no longer fits the model, optimizer or
    weight average."""
    try:
        if (averaged is None) != (checkpoint.averaged is None):
            raise ValueError("one of them averages the weights (ema) and the other does not")
        if averaged is not None:
            averaged.load_state_dict(checkpoint.averaged)
        model.load_state_dict(checkpoint.model)
        optimizer.load_state_dict(checkpoint.optimizer)
        generator.set_state(checkpoint.generator)
        torch.set_rng_state(checkpoint.global_rng)
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"the checkpoint of run {checkpoint.run_id} no longer fits this code's model or optimizer ({first[:200]})") from None
