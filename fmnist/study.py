"""The study's Table 2 from tracked runs: per-cell seed statistics, paired tests, the combined run.

Runs carry the tag `fmnist.cell` (set by the `conf/experiment/table2_*` presets). The `epochs`
cell is one 20-epoch run whose test set was also evaluated after epoch 10; it yields the rows
`epochs10` and `epochs20`.
"""

import csv
import io
import shlex
from dataclasses import dataclass, field

import torch

from fmnist.config import is_semantic
from fmnist.stats import Comparison, compare, mean_std
from fmnist.tracking import CELL_TAG, OVERRIDES_TAG, RunRecord, Tracker

# cell -> (factor it varies, the study's reported test accuracy in %, None where it gave no number)
TABLE2 = {
    "baseline": ("baseline", 92.28),
    "epochs10": ("epochs", 92.69),
    "epochs20": ("epochs", 92.34),
    "sgd": ("optimizer", 88.27),
    "adamw": ("optimizer", 92.48),
    "flip": ("transform", None),  # the study: "does not lead to much difference"
    "mse": ("loss", 92.50),
    "nll": ("loss", 92.25),
    "combined": ("combined", 92.86),
}
FACTORS = ("epochs", "optimizer", "transform", "loss")


@dataclass
class Cell:
    name: str
    acc: dict[int, float] = field(default_factory=dict)  # seed -> test accuracy
    correct: dict[int, torch.Tensor] = field(default_factory=dict)  # seed -> per-image correctness
    curves: dict[int, dict[str, list[float]]] = field(default_factory=dict)  # seed -> val curves
    replaced: int = 0  # earlier runs of the same (cell, seed) superseded by a later one
    superseded: int = 0  # earlier runs of the cell with other settings, left out of it
    overrides: list[str] = field(default_factory=list)  # command-line overrides of the latest run
    note: str = ""


def what_it_changes(overrides: list[str]) -> list[str]:
    """The overrides that say what a run computes, minus the seed and the cell tag."""
    keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    return [o for o, k in zip(overrides, keys) if is_semantic(k) and k not in ("seed", "study.cell")]


def _correctness(text: str) -> torch.Tensor:
    rows = list(csv.DictReader(io.StringIO(text)))
    return torch.tensor([r["label"] == r["prediction"] for r in rows])


def _readings(tracker: Tracker, run: RunRecord) -> list[tuple[str, int, str]]:
    """(cell, epoch, predictions artifact) for each test evaluation the run stands for."""
    cell, epochs = run.tags[CELL_TAG], int(run.params["schedule.epochs"])
    if cell != "epochs":
        return [(cell, epochs, "test_predictions.csv")]
    milestones = [int(e) for e in run.params.get("study.test_at", "[]").strip("[]").split(",") if e.strip()]
    readings = [(f"epochs{e}", e, f"test_predictions_epoch{e}.csv") for e in milestones if e < epochs]
    return [r for r in readings + [(f"epochs{epochs}", epochs, "test_predictions.csv")] if r[0] in TABLE2]


def collect(tracker: Tracker, runs: list[RunRecord]) -> dict[str, Cell]:
    """Cells of one model's finished runs; for a repeated (cell, seed) the latest run counts."""
    cells: dict[str, Cell] = {}
    for run in runs:  # oldest first, so a later run replaces an earlier one
        seed = int(run.params["seed"])
        curves = {key: tracker.history(run.run_id, key) for key in ("val/acc", "val/loss")}
        test_acc = dict(tracker.history_by_step(run.run_id, "test/acc"))
        overrides = shlex.split(run.tags.get(OVERRIDES_TAG, ""))
        for name, epoch, artifact in _readings(tracker, run):
            cell = cells.setdefault(name, Cell(name))
            if cell.acc and what_it_changes(cell.overrides) != what_it_changes(overrides):
                # Never pool different settings under one cell: the latest settings count, alone.
                cells[name] = cell = Cell(name, superseded=cell.superseded + cell.replaced + len(cell.acc))
            cell.replaced += seed in cell.acc
            cell.acc[seed] = test_acc[epoch]
            cell.correct[seed] = _correctness(tracker.artifact_text(run.run_id, artifact))
            cell.curves[seed] = {k: v[:epoch] for k, v in curves.items()}
            cell.overrides = overrides
            if run.tags[CELL_TAG] == "epochs":
                cell.note = f"read at epoch {epoch} of a {run.params['schedule.epochs']}-epoch run"
            if name == "combined":
                cell.note = "ran " + " ".join(what_it_changes(cell.overrides))
    return cells


@dataclass
class Row:
    cell: Cell
    mean: float
    std: float
    comparison: Comparison | None  # None for the baseline, or without a seed shared with it

    def _replaced_note(self) -> str:
        notes = []
        if self.cell.replaced:
            notes.append(f"{self.cell.replaced} repeated run(s) replaced by the latest")
        if self.cell.superseded:
            notes.append(f"{self.cell.superseded} earlier run(s) with other settings left out")
        return "; ".join(notes)

    def values(self) -> dict[str, object]:
        factor, reported = TABLE2.get(self.cell.name, ("other", None))
        c = self.comparison
        return {
            "cell": self.cell.name,
            "factor": factor,
            "n": len(self.cell.acc),
            "test_acc_mean": 100 * self.mean,
            "test_acc_std": 100 * self.std,
            "diff": None if c is None else 100 * c.diff,
            "ci_low": None if c is None else 100 * c.ci_low,
            "ci_high": None if c is None else 100 * c.ci_high,
            "paired_seeds": None if c is None else c.seeds,
            "only_baseline_right": None if c is None else c.b,
            "only_cell_right": None if c is None else c.c,
            "p_mcnemar": None if c is None else c.p_value,
            "verdict": "reference" if self.cell.name == "baseline" else ("no paired seeds" if c is None else c.verdict),
            "study_acc": reported,
            "note": "; ".join(filter(None, [self.cell.note, self._replaced_note()])),
        }


def table(cells: dict[str, Cell]) -> list[Row]:
    if "baseline" not in cells:
        raise ValueError("Table 2 needs baseline runs (experiment=table2_baseline) to compare against")
    base = cells["baseline"]
    order = [c for c in TABLE2 if c in cells] + sorted(c for c in cells if c not in TABLE2)
    rows = []
    for name in order:
        cell = cells[name]
        mean, std = mean_std(list(cell.acc.values()))
        seeds = sorted(set(cell.correct) & set(base.correct))
        comparison = None
        if name != "baseline" and seeds:
            stack = lambda c: torch.stack([c.correct[s] for s in seeds])  # noqa: E731
            comparison = compare(stack(base), stack(cell))
        rows.append(Row(cell, mean, std, comparison))
    return rows


def helpful_cells(rows: list[Row], strict: bool) -> list[str]:
    """Per factor, the cell with the largest gain over the baseline, if it helped.

    The study's rule counts any gain; the strict rule only a significantly better verdict.
    """
    chosen = []
    for factor in FACTORS:
        candidates = [
            r for r in rows
            if TABLE2.get(r.cell.name, ("",))[0] == factor and r.comparison is not None
            and (r.comparison.verdict == "better" if strict else r.comparison.diff > 0)
        ]
        if candidates:
            chosen.append(max(candidates, key=lambda r: r.comparison.diff).cell.name)
    return chosen


def combined_command(cells: list[str], baseline_overrides: list[str], seeds: list[int], experiment: str) -> str:
    """The `python -m fmnist.run` command that applies every chosen cell to the baseline's runs.

    It keeps the baseline's own overrides (model, data size, ...) and replaces its preset and seed.
    """
    replaced = ("experiment=", "seed=", "study.cell=", "schedule.epochs=")
    kept = [o for o in baseline_overrides if not o.startswith(replaced)]
    presets = [f"table2_{c}" for c in cells if not c.startswith("epochs")]
    overrides = ["-m"]
    if presets:
        overrides.append(f"experiment=[{','.join(presets)}]" if len(presets) > 1 else f"experiment={presets[0]}")
    else:
        overrides.append("experiment=table2_baseline")  # nothing helped: the combination is the baseline
    overrides += [f"schedule.epochs={c[len('epochs'):]}" for c in cells if c.startswith("epochs")]
    overrides += ["study.cell=combined", *kept, f"seed={','.join(map(str, seeds))}"]
    if not any(o.startswith("tracking.experiment=") for o in kept):
        overrides.append(f"tracking.experiment={experiment}")
    return shlex.join(["python", "-m", "fmnist.run", *overrides])
