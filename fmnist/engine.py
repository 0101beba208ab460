"""The training loop. It takes ready objects and plain values: no Hydra, no MLflow."""

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from fmnist.data import Dataset, Split, batches
from fmnist.transforms import BatchTransform

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CHECK_EVERY = 50  # steps between finiteness checks (each one syncs with the device)


def autocast(device: torch.device, precision: str):
    """The forward pass's precision: bf16 autocast (matmuls and convs in bf16, the rest fp32), or plain fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float  # wall time of the epoch, validation included

    def metrics(self) -> dict[str, float]:
        return {
            "train/loss": self.train_loss,
            "train/acc": self.train_acc,
            "val/loss": self.val_loss,
            "val/acc": self.val_acc,
            "epoch/seconds": self.seconds,
        }


@dataclass
class Evaluation:
    loss: float
    acc: float
    predictions: torch.Tensor  # (N,) predicted class per example, on the CPU


@torch.inference_mode()
def evaluate(
    model: nn.Module, split: Split, transform: BatchTransform, loss_fn: LossFn, batch_size: int = 1000, precision: str = "fp32"
) -> Evaluation:
    """Loss, accuracy and predictions on `split`; logits are averaged over the transform's eval views."""
    model.eval()
    loss_sum = torch.zeros((), device=split.labels.device)
    predictions = []
    for images, labels in batches(split, batch_size):
        with autocast(labels.device, precision):
            logits = torch.stack([model(view).float() for view in transform.eval_views(images)]).mean(0)
        loss_sum += loss_fn(logits, labels) * len(labels)
        predictions.append(logits.argmax(dim=1))
    predicted = torch.cat(predictions)
    acc = (predicted == split.labels).float().mean().item()
    return Evaluation(loss_sum.item() / len(split), acc, predicted.cpu())


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss_sum):
        raise Diverged(f"training loss became {loss_sum.item()} in epoch {epoch} by step {step}; lower optimizer.lr")


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    transform: BatchTransform,
    split: Split,
    batch_size: int,
    generator: torch.Generator,
    set_lr: Callable[[float], None],
    epoch: int,
    progress: bool,
    precision: str = "fp32",
    between_steps: Callable[[], None] = lambda: None,
    averaged: AveragedModel | None = None,
    epochs: int | None = None,
) -> tuple[float, float]:
    """One pass over `split`; returns mean training loss and accuracy. `between_steps` may raise to stop it; `averaged`
    (weight averaging) takes each step's weights; `epochs` (the run's total) tells the transform how far training has come."""
    model.train()
    steps = -(-len(split) // batch_size)
    loss_sum = torch.zeros((), device=split.labels.device)
    correct = torch.zeros((), device=split.labels.device, dtype=torch.long)
    bar = tqdm(batches(split, batch_size, generator), total=steps, desc=f"epoch {epoch}", disable=None if progress else True, leave=False)
    for step, (images, labels) in enumerate(bar):
        between_steps()
        elapsed = epoch - 1 + step / steps
        set_lr(elapsed)
        with autocast(labels.device, precision):
            logits = model(transform.train(images, generator, elapsed / epochs if epochs else 1.0)).float()
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if averaged is not None:
            averaged.update_parameters(model)
        loss_sum += loss.detach() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum()
        if (step + 1) % CHECK_EVERY == 0:
            _check_finite(loss_sum, epoch, step + 1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    _check_finite(loss_sum, epoch, steps)
    return loss_sum.item() / len(split), correct.item() / len(split)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    lr_at: Callable[[float], float],
    transform: BatchTransform,
    data: Dataset,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
    progress: bool = True,
    start_epoch: int = 1,
    precision: str = "fp32",
    between_steps: Callable[[], None] = lambda: None,
    averaged: AveragedModel | None = None,
) -> list[EpochResult]:
    """Train epochs `start_epoch`..`epochs`, validating after each; `lr_at(epochs elapsed)` is the learning rate.
    With `averaged` (an average of `model`'s weights over the steps), that average is what is validated.

    The rate is computed from the schedule at every step, never read back from the optimizer, so a
    run resumed at `start_epoch` (model, optimizer and generator restored) follows the same rates as
    an uninterrupted one. Returns the results of the epochs trained in this call.
    """

    def set_lr(elapsed: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(elapsed)

    history = []
    for epoch in range(start_epoch, epochs + 1):
        start = time.perf_counter()
        train_loss, train_acc = train_epoch(
            model, optimizer, loss_fn, transform, data.train, batch_size, generator, set_lr, epoch, progress, precision, between_steps, averaged,
            epochs,
        )
        val = evaluate(averaged or model, data.val, transform, loss_fn, precision=precision)
        result = EpochResult(epoch, train_loss, train_acc, val.loss, val.acc, time.perf_counter() - start)
        history.append(result)
        print(
            f"epoch {epoch}/{epochs}  train/loss {train_loss:.4f}  train/acc {train_acc:.4f}  "
            f"val/loss {val.loss:.4f}  val/acc {val.acc:.4f}  {result.seconds:.1f}s",
            file=sys.stderr,
        )
        on_epoch(result)
    return history
