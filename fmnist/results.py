"""What a study's report needs of a finished run, as typed values, and the export that keeps them.

`tracking.read_results` builds `Result`s from an MLflow store; `read_export` builds the same from an
export: a CSV with one row per (run, cell it stands for) and an `.npz` beside it with each row's
per-image test correctness (packed bits) and validation curves. `python -m fmnist.report --from`
rebuilds a table from exports alone, without the store.
"""

import csv
import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from fmnist.errors import UserError

CURVES = ("val/acc", "val/loss")


@dataclass
class Result:
    """One cell of one finished run: what the run scored when read at the cell's epoch."""

    model: str
    study: str
    cell: str
    factor: str
    level: str
    seed: int
    git_commit: str
    fingerprint: str  # of the run's whole semantic config, seed included (skips and resumes use it)
    settings: str  # the same without seed and readings: equal for every seed of one cell
    val_acc: float  # at `epochs`
    test_acc: float
    epochs: int  # the epoch this cell is read at
    seconds: float  # training seconds up to that epoch
    run_id: str
    reference_acc: float | None  # a published figure for this cell, in %
    predictions_sha256: str  # of the test predictions (identical runs have identical digests)
    command: list[str]  # the sweep's own overrides (without seed and study bookkeeping)
    study_choice: list[str]  # what the study's authors combined
    study_choice_acc: float | None
    margin: float  # the study's equivalence margin, points
    start_time: int  # when the run started, ms since the epoch: the latest run of a (cell, seed) counts
    threads: int | None  # torch CPU threads: on a CPU a run is reproducible bit for bit from its seed and this
    correct: np.ndarray = field(repr=False)  # (test images,) bool
    curves: dict[str, list[float]] = field(repr=False)  # val/acc, val/loss per epoch up to `epochs`


def predictions_digest(predictions: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(predictions, dtype=np.uint8).tobytes()).hexdigest()


COLUMNS = [f.name for f in fields(Result) if f.name not in ("correct", "curves")]
OPTIONAL = ("threads",)  # columns that exports written before them lack


def _to_text(name: str, value: object) -> str:
    if value is None:
        return ""
    if name in ("command", "study_choice"):
        return " ".join(value) if name == "study_choice" else "\t".join(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _from_text(name: str, text: str) -> object:
    kind = {f.name: f.type for f in fields(Result)}[name]
    if name == "command":
        return text.split("\t") if text else []
    if name == "study_choice":
        return text.split()
    if text == "" and "None" in str(kind):
        return None
    if kind is int or str(kind) == "int | None":
        return int(text)
    if kind is float or "float" in str(kind):
        return float(text)
    return text


def _key(row: int, name: str) -> str:
    return f"{row}/{name}"


def write_export(results: list[Result], path: Path) -> list[Path]:
    """`path` (.csv) and the .npz beside it; rows in the order given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in results:
            writer.writerow([_to_text(c, getattr(r, c)) for c in COLUMNS])
    arrays = {}
    for i, r in enumerate(results):
        arrays[_key(i, "correct")] = np.packbits(r.correct.astype(bool))
        arrays[_key(i, "images")] = np.array(len(r.correct))
        for curve in CURVES:
            arrays[_key(i, curve.replace("/", "_"))] = np.asarray(r.curves[curve], dtype=np.float64)
    np.savez_compressed(path.with_suffix(".npz"), **arrays)
    return [path, path.with_suffix(".npz")]


def read_export(path: Path) -> list[Result]:
    """The results in one export (a .csv with its .npz); UserError if either is missing or damaged."""
    arrays_path = path.with_suffix(".npz")
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        arrays = np.load(arrays_path)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the export {path} with {arrays_path.name} ({err}); both files are needed") from None
    lacking = set(COLUMNS) - set(OPTIONAL) - set(rows[0]) if rows else set()
    if lacking:
        raise UserError(f"{path} is not an fmnist export: it lacks the columns {', '.join(sorted(lacking))}")
    results = []
    with arrays:
        for i, row in enumerate(rows):
            try:
                images = int(arrays[_key(i, "images")])
                correct = np.unpackbits(arrays[_key(i, "correct")])[:images].astype(bool)
                curves = {c: arrays[_key(i, c.replace("/", "_"))].tolist() for c in CURVES}
            except KeyError:
                raise UserError(f"{arrays_path} has no arrays for row {i + 1} of {path}; the two files do not belong together") from None
            values = {c: _from_text(c, row.get(c, "")) for c in COLUMNS}
            results.append(Result(**values, correct=correct, curves=curves))
    return results


def export_files(paths: list[Path]) -> list[Path]:
    """The export CSVs named, a folder standing for every *.csv export in it."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.glob("*.csv") if p.with_suffix(".npz").is_file())
        elif path.suffix == ".csv":
            found.append(path)
        else:
            raise UserError(f"--from takes export .csv files or folders holding them, not {path}")
    if not found:
        raise UserError(f"no exports (.csv with an .npz beside it) in {', '.join(map(str, paths))}")
    return found


def exported_runs(paths: list[Path]) -> dict[str, tuple[Path, str]]:
    """fingerprint -> (export file, run id) of every run recorded in these exports (the CSVs alone)."""
    found = {}
    for path in paths:
        try:
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    found[row["fingerprint"]] = (path, row["run_id"])
        except (OSError, KeyError) as err:
            raise UserError(f"exports: cannot read the run export {path} ({err}); fix the path or drop it from exports") from None
    return found
