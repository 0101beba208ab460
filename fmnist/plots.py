"""Figures: learning curves (the study's Figures 1-5) and confusion matrices."""

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
from matplotlib.ticker import LogFormatter, MaxNLocator

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class PlainLogFormatter(LogFormatter):
    """The ticks matplotlib labels on a log axis, written as plain numbers (0.2, 1, 10).

    The default writes them as mathtext (2x10^-1), whose parsing took a quarter of a figure's time.
    """

    def __call__(self, x, pos=None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def log_y(ax) -> None:
    """Log-scaled y axis; within one decade the minor ticks are labelled too, else it would show one number."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PlainLogFormatter())
    ax.yaxis.set_minor_formatter(PlainLogFormatter(minor_thresholds=(2, 0.5)))


def learning_curves(curves: dict[str, dict[str, list[float]]], path: Path, title: str = "") -> None:
    """`curves[label][metric]`, metric in train/acc, val/acc, train/loss, val/loss, indexed by epoch - 1."""
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for label, series in curves.items():
        for split, style in (("train", "--"), ("val", "-")):
            for ax, kind in ((ax_acc, "acc"), (ax_loss, "loss")):
                values = series.get(f"{split}/{kind}", [])
                if values:
                    epochs = range(1, len(values) + 1)
                    prefix = f"{label} " if label else ""
                    ax.plot(epochs, values, style, marker="o", markersize=3, label=f"{prefix}{split}")
    log_y(ax_loss)  # losses of different kinds (ce, mse) differ by orders of magnitude
    for ax, kind in ((ax_acc, "accuracy"), (ax_loss, "loss")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: tick 1, not 0.945-1.050
        ax.set_xlabel("epoch")
        ax.set_ylabel(kind)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if kind == "accuracy" else "upper right")  # "best" searches the data
    fig.suptitle(title)
    # Fixed margins: tight_layout would draw the figure an extra time, doubling the cost of every run's artifacts.
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.28)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_matrix(confusion, path: Path, title: str = "") -> None:
    counts = confusion.numpy()
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(counts, cmap="Blues")
    ticks = range(len(CLASS_NAMES))
    ax.set_xticks(ticks, CLASS_NAMES, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, CLASS_NAMES, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    # Numbers only where a cell holds at least 1% of its row: the readable part, and each text costs
    # ~2 ms to draw (all 100 would double the figure's time). confusion_matrix.csv has every count.
    threshold = counts.max() / 2
    shown = counts >= 0.01 * counts.sum(axis=1, keepdims=True)
    for i, j in zip(*shown.nonzero()):
        ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=7, color="white" if counts[i, j] > threshold else "black")
    shown_note = "counts shown where at least 1% of the row"
    ax.set_title(f"{title}\n({shown_note})" if title else shown_note, fontsize=9)
    fig.subplots_adjust(left=0.2, right=0.98, bottom=0.2, top=0.93)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def seed_curves(curves: dict[str, list[dict[str, list[float]]]], path: Path, title: str = "") -> None:
    """`curves[label]` is one dict per seed (val/acc, val/loss by epoch): each seed thin behind its label's mean."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for index, (label, seeds) in enumerate(curves.items()):
        colour = f"C{index % 10}"
        for ax, key in zip(axes, ("val/acc", "val/loss")):
            for seed in seeds:
                ax.plot(range(1, len(seed[key]) + 1), seed[key], color=colour, alpha=min(0.3, 8 / len(seeds)), linewidth=0.8)
            length = min(len(seed[key]) for seed in seeds)
            mean = [sum(seed[key][i] for seed in seeds) / len(seeds) for i in range(length)]
            ax.plot(range(1, length + 1), mean, color=colour, linewidth=2, marker="o", markersize=3, label=label)
    log_y(axes[1])
    for ax, kind in zip(axes, ("validation accuracy", "validation loss")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("epoch")
        ax.set_ylabel(kind)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.28)
    fig.savefig(path, dpi=110)
    plt.close(fig)


VERDICT_COLOURS = {
    "better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue", "identical": "tab:blue", "open": "tab:orange",
}


@dataclass
class ForestEntry:
    label: str
    diff: float  # points
    low: float | None  # the interval the table prints
    high: float | None
    verdict: str
    reference: float | None  # the study's published difference, points


@dataclass
class ForestPanel:
    title: str
    entries: list[ForestEntry]
    margin: float
    interval: str  # what the bars are, e.g. "95% repeated CI"


def forest(panels: list[ForestPanel], path: Path, title: str = "") -> None:
    """Every cell's difference from its baseline with its interval, coloured by verdict, one panel per model side by side."""
    rows = max(len(p.entries) for p in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1, 0.45 * rows + 1.8), squeeze=False, sharey=False)
    for ax, panel in zip(axes[0], panels):
        ax.axvline(0, color="black", linewidth=0.8)
        for edge in (-panel.margin, panel.margin):
            ax.axvline(edge, color="grey", linewidth=0.8, linestyle=":")
        for y, e in enumerate(reversed(panel.entries)):
            colour = VERDICT_COLOURS.get(e.verdict, "tab:gray")
            if e.low is not None:
                ax.plot([e.low, e.high], [y, y], color=colour, linewidth=2)
            ax.plot([e.diff], [y], "o", color=colour)
            if e.reference is not None:
                ax.plot([e.reference], [y], "D", markerfacecolor="none", markeredgecolor="black", markersize=6)
            ax.annotate(e.verdict, (1.0, y), xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7, color=colour)
        ax.set_yticks(range(len(panel.entries)), [e.label for e in reversed(panel.entries)], fontsize=8)
        ax.set_xlabel(f"Δ test accuracy, points ({panel.interval}; ◇ the study's own Δ; dotted ±{panel.margin:g})", fontsize=8)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.12, right=0.9, bottom=0.18, top=0.85, wspace=0.75)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.1)  # cell names of any length: the saved figure grows to hold them
    plt.close(fig)


def optimization_history(trials: list[tuple[int, float | None, str]], path: Path, title: str = "") -> None:
    """(trial number, objective, state) per trial: completed ones as dots, pruned as crosses, the best so far as a line."""
    fig, ax = plt.subplots(figsize=(7, 4))
    best, best_line = None, []
    for number, value, state in trials:
        if value is None:
            continue
        ax.plot([number], [value], "o" if state == "COMPLETE" else "x", color="tab:blue" if state == "COMPLETE" else "tab:gray",
                markersize=4)
        if state == "COMPLETE":
            best = value if best is None else max(best, value)
        best_line.append((number, best))
    points = [(n, b) for n, b in best_line if b is not None]
    if points:
        ax.step([n for n, _ in points], [b for _, b in points], where="post", color="tab:red", label="best completed so far")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (last epoch run; × pruned)")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def importances(values: dict[str, float], path: Path, title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(2, len(values)) + 1.4))
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (share of the objective's variance)")
    ax.set_title(title if values else f"{title}\n(too few completed trials)", fontsize=9)
    fig.subplots_adjust(left=0.3, right=0.97, bottom=0.2, top=0.85)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.1)  # long setting names are not clipped
    plt.close(fig)
