"""Figures: the log-scaled loss axis is labelled in plain numbers, and the files are real PNGs."""

import matplotlib.pyplot as plt
import pytest
import torch

from fmnist import plots


def loss_axis_labels(low: float, high: float) -> list[str]:
    fig, ax = plt.subplots()
    ax.plot([1, 2], [high, low])
    plots.log_y(ax)  # as learning_curves scales its loss panel
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    plt.close(fig)
    return labels


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.28, 0.53, {"0.3", "0.4", "0.5"}),  # within a decade: minor ticks labelled, or the axis would have no label at all
        (0.01, 2.0, {"0.01", "0.1", "1"}),  # over decades: the powers of ten only
    ],
)
def test_log_axis_labels_are_plain_numbers(low, high, expected):
    labels = loss_axis_labels(low, high)
    assert expected <= set(labels), labels
    assert not any("$" in label or "e" in label for label in labels), labels  # no mathtext, no 1e-01
    if high / low > 10:
        assert set(labels) <= {"0.001", "0.01", "0.1", "1", "10"}, labels


def test_figures_are_written_as_png(tmp_path):
    curves = {"": {"train/acc": [0.8, 0.9], "val/acc": [0.82, 0.88], "train/loss": [0.6, 0.3], "val/loss": [0.55, 0.35]}}
    plots.learning_curves(curves, tmp_path / "curves.png", title="t")
    plots.confusion_matrix(torch.eye(10, dtype=torch.long) * 100 + 1, tmp_path / "confusion.png", title="t")
    for name in ("curves.png", "confusion.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def margins_are_blank(path) -> bool:
    """No ink in the saved image's outermost pixels: nothing (a label, a title) was cut at its edge."""
    image = plt.imread(path)[..., :3]
    edges = [image[0], image[-1], image[:, 0], image[:, -1]]
    return all((edge > 0.95).all() for edge in edges)


def test_a_one_panel_forest_and_the_importances_keep_long_labels_inside_the_saved_figure(tmp_path):
    long = "trial32 with a long name that the fixed margin used to clip (n=3)"
    entries = [plots.ForestEntry(long, 0.4, -0.1, 0.9, "open", None), plots.ForestEntry("sgd (n=5)", -4.5, -5.6, -3.4, "worse", -4.0)]
    plots.forest([plots.ForestPanel("mlp", entries, 0.3, "95% repeated CI")], tmp_path / "forest.png", title="one panel")
    plots.importances({"optimizer.weight_decay_with_a_long_name": 0.6, "model.dropout": 0.4}, tmp_path / "importance.png", title="x")
    assert margins_are_blank(tmp_path / "forest.png") and margins_are_blank(tmp_path / "importance.png")
