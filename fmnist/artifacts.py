"""The files a finished run leaves in MLflow: config, figures, confusion counts, predictions, weights."""

from pathlib import Path

import torch
import yaml

from fmnist import plots
from fmnist.engine import EpochResult, Evaluation
from fmnist.metrics import confusion_matrix, per_class_accuracy


def write_predictions(path: Path, labels: torch.Tensor, predictions: torch.Tensor) -> None:
    rows = (f"{i},{int(y)},{int(p)}" for i, (y, p) in enumerate(zip(labels.tolist(), predictions.tolist())))
    path.write_text("index,label,prediction\n" + "\n".join(rows) + "\n")


def write_confusion(path: Path, confusion: torch.Tensor) -> None:
    """Every count of the confusion matrix: one row per true class, one column per predicted class."""
    lines = ["true\\predicted," + ",".join(plots.CLASS_NAMES)]
    lines += [f"{name}," + ",".join(map(str, row)) for name, row in zip(plots.CLASS_NAMES, confusion.tolist())]
    path.write_text("\n".join(lines) + "\n")


def write_per_class(path: Path, confusion: torch.Tensor) -> None:
    rows = [
        f"{i},{name},{acc:.4f},{int(count)}"
        for i, (name, acc, count) in enumerate(zip(plots.CLASS_NAMES, per_class_accuracy(confusion).tolist(), confusion.sum(1)))
    ]
    path.write_text("class,name,accuracy,count\n" + "\n".join(rows) + "\n")


def write_artifacts(folder: Path, values: dict, history: list[EpochResult], test: Evaluation | None, labels, model) -> None:
    """Everything a run leaves; without `test` (a search's trial) only its config, curves and weights."""
    (folder / "config.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    curves = {"": {key: [r.metrics()[key] for r in history] for key in ("train/acc", "val/acc", "train/loss", "val/loss")}}
    title = f"test/acc {test.acc:.4f}" if test is not None else f"val/acc {history[-1].val_acc:.4f} (a search trial: no test set)"
    plots.learning_curves(curves, folder / "learning_curves.png", title=title)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, folder / "model.pt")
    if test is None:
        return
    confusion = confusion_matrix(test.predictions, labels, len(plots.CLASS_NAMES))
    plots.confusion_matrix(confusion, folder / "confusion_matrix.png", title=f"test/acc {test.acc:.4f}")
    write_confusion(folder / "confusion_matrix.csv", confusion)
    write_per_class(folder / "per_class_accuracy.csv", confusion)
    write_predictions(folder / "test_predictions.csv", labels, test.predictions)
