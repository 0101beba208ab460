"""What a study's report needs of a finished run, as typed values, and the export that keeps them.

`tracking.read_results` builds `Result`s (and each run's `StudyRecord`) from an MLflow store;
`read_export` builds the same from an export: a CSV with one row per (run, cell it stands for) and
an `.npz` beside it with each row's per-image test correctness (packed bits) and validation curves.
`python -m fmnist.report --from` rebuilds a table from exports alone, without the store.
"""

import csv
import hashlib
import zipfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from fmnist.errors import UserError
from fmnist.sequential import SeedsDesign
from fmnist.study import BASELINE, COMBINED, Choice, Reading, StudyRecord

CURVES = ("val/acc", "val/loss")


@dataclass
class Result:
    """One cell of one finished run: what the run scored when read at the cell's epoch."""

    model: str
    study: str
    table: str  # the study record's table: runs of one table share it
    cell: str
    factor: str
    level: str
    seed: int
    stage: int | None  # the stage of the study's design that ran it (None: not recorded)
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
    start_time: int  # when the run started, ms since the epoch: the latest run of a (cell, seed) counts
    threads: int | None  # torch CPU threads: on a CPU a run is reproducible bit for bit from its seed and this
    correct: np.ndarray = field(repr=False)  # (test images,) bool
    curves: dict[str, list[float]] = field(repr=False)  # val/acc, val/loss per epoch up to `epochs`


@dataclass
class Studied:
    """Results with the study record of each run they come from."""

    results: list[Result]
    records: dict[str, StudyRecord]  # run id -> the run's record

    def __add__(self, other: "Studied") -> "Studied":
        seen = {(r.run_id, r.cell) for r in self.results}
        return Studied(self.results + [r for r in other.results if (r.run_id, r.cell) not in seen], self.records | other.records)


def predictions_digest(predictions: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(predictions, dtype=np.uint8).tobytes()).hexdigest()


RESULT_COLUMNS = [f.name for f in fields(Result) if f.name not in ("correct", "curves")]
RECORD_COLUMNS = ["choice", "choice_acc", "margin", "effect", "seeds", "ordered", "command"]  # the run's record beyond its readings
COLUMNS = RESULT_COLUMNS + RECORD_COLUMNS
# Exports written before the study record: other names for the record's columns, and columns they lack.
LEGACY_NAMES = {"choice": "study_choice", "choice_acc": "study_choice_acc"}
OPTIONAL = ("threads", "table", "stage", "seeds", "ordered", "effect")


def _number(text: str, kind=float):
    return None if text == "" else kind(text)


def _row(result: Result, record: StudyRecord) -> list[str]:
    values = {f: getattr(result, f) for f in RESULT_COLUMNS}
    values |= {
        "choice": " ".join(record.choice.levels), "choice_acc": record.choice.reference_acc, "margin": record.margin, "effect": record.effect,
        "seeds": "" if record.seeds is None else f"{record.seeds.first} {record.seeds.step} {record.seeds.max} {record.seeds.sd!r}",
        "ordered": " ".join(record.ordered),
        "command": "\t".join(record.command),
    }
    return ["" if values[c] is None else repr(values[c]) if isinstance(values[c], float) else str(values[c]) for c in COLUMNS]


def _key(row: int, name: str) -> str:
    return f"{row}/{name}"


def write_export(studied: Studied, path: Path) -> list[Path]:
    """`path` (.csv) and the .npz beside it; rows in the order given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in studied.results:
            writer.writerow(_row(r, studied.records[r.run_id]))
    arrays = {}
    for i, r in enumerate(studied.results):
        arrays[_key(i, "correct")] = np.packbits(r.correct.astype(bool))
        arrays[_key(i, "images")] = np.array(len(r.correct))
        for curve in CURVES:
            arrays[_key(i, curve.replace("/", "_"))] = np.asarray(r.curves[curve], dtype=np.float64)
    np.savez_compressed(path.with_suffix(".npz"), **arrays)
    return [path, path.with_suffix(".npz")]


def _result(row: dict[str, str], correct: np.ndarray, curves: dict[str, list[float]]) -> Result:
    return Result(
        model=row["model"], study=row["study"], table=row.get("table", ""), cell=row["cell"], factor=row["factor"], level=row["level"],
        seed=int(row["seed"]), stage=_number(row.get("stage", ""), int), git_commit=row["git_commit"], fingerprint=row["fingerprint"],
        settings=row["settings"], val_acc=float(row["val_acc"]), test_acc=float(row["test_acc"]), epochs=int(row["epochs"]),
        seconds=float(row["seconds"]), run_id=row["run_id"], reference_acc=_number(row["reference_acc"]),
        predictions_sha256=row["predictions_sha256"], start_time=int(row["start_time"]), threads=_number(row.get("threads", ""), int),
        correct=correct, curves=curves,
    )


def _record(rows: list[dict[str, str]], table: str) -> StudyRecord:
    """A run's record from its rows (one per cell it stands for)."""
    first = rows[0]
    readings = sorted((Reading(r["cell"], r["factor"], r["level"], int(r["epochs"]), _number(r["reference_acc"])) for r in rows),
                      key=lambda r: r.epoch)
    seeds = first.get("seeds", "").split()  # first step max [planned sd]: exports before the planned SD have three
    design = SeedsDesign(*map(int, seeds[:3]), *map(float, seeds[3:])) if seeds else None
    return StudyRecord(
        first["study"], table, tuple(readings), Choice(first["choice"].split(), _number(first["choice_acc"])), float(first["margin"]),
        design, tuple(first.get("ordered", "").split()), _number(first.get("stage", ""), int),
        tuple(first["command"].split("\t")) if first["command"] else (), _number(first.get("effect", "")) or 0.5,
    )


def _legacy_tables(rows: list[dict[str, str]]) -> dict[tuple[str, str], str]:
    """Exports from before the record name no table: a (study, model)'s is its baseline runs' settings, where they agree."""
    found: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        if row["cell"] == BASELINE:
            found.setdefault((row["study"], row["model"]), set()).add(row["settings"])
    return {key: settings.pop() for key, settings in found.items() if len(settings) == 1}


def read_export(path: Path) -> Studied:
    """The results in one export (a .csv with its .npz), with each run's record; UserError if either is missing or damaged."""
    arrays_path = path.with_suffix(".npz")
    if arrays_path.is_file() and not zipfile.is_zipfile(arrays_path):
        raise UserError(f"{arrays_path} is not the .npz file that --export writes beside {path.name}; export the study again")
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        arrays = np.load(arrays_path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, csv.Error, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the export {path} with {arrays_path.name} ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                        "both files are needed, as --export wrote them") from None
    if not rows:
        raise UserError(f"{path} holds no runs; export a study with `python -m fmnist.report --export {path.name}`")
    for row in rows:
        for new, old in LEGACY_NAMES.items():
            if new not in row and old in row:
                row[new] = row.pop(old)
    lacking = set(COLUMNS) - set(OPTIONAL) - set(rows[0]) if rows else set()
    if lacking:
        raise UserError(f"{path} is not an fmnist export: it lacks the columns {', '.join(sorted(lacking))}")
    legacy = _legacy_tables(rows)
    results, by_run = [], {}
    with arrays:
        for i, row in enumerate(rows):
            row["table"] = row.get("table") or legacy.get((row["study"], row["model"]), "")
            try:
                images = int(arrays[_key(i, "images")])
                correct = np.unpackbits(arrays[_key(i, "correct")])[:images].astype(bool)
                curves = {c: arrays[_key(i, c.replace("/", "_"))].tolist() for c in CURVES}
                results.append(_result(row, correct, curves))
            except KeyError:
                raise UserError(f"{arrays_path} has no arrays for row {i + 1} of {path}; the two files do not belong together") from None
            except (OSError, EOFError, zipfile.BadZipFile) as err:
                raise UserError(f"{arrays_path} is damaged at row {i + 1} of {path} ({type(err).__name__}); export the study again") from None
            except (ValueError, TypeError) as err:
                raise UserError(f"{path}, row {i + 1}: a value is not what an export holds ({err}); the file is damaged") from None
            by_run.setdefault(row["run_id"], []).append(row)
    try:
        records = {run_id: _record(members, members[0]["table"]) for run_id, members in by_run.items()}
    except (ValueError, UserError) as err:
        raise UserError(f"{path}: a run's study record is damaged ({err})") from None
    return Studied(results, records)


def with_tables(studied: Studied) -> Studied:
    """Runs of exports that name no table (written before the record, without their baseline in the same file) take
    their (study, model)'s table from the exports read with them, where those agree on one."""
    known: dict[tuple[str, str], set[str]] = {}
    for r in studied.results:
        if r.table:
            known.setdefault((r.study, r.model), set()).add(r.table)
    tables = {key: found.pop() for key, found in known.items() if len(found) == 1}
    results = [replace(r, table=tables.get((r.study, r.model), "")) if not r.table else r for r in studied.results]
    records = dict(studied.records)
    for r in results:
        if not records[r.run_id].table:
            records[r.run_id] = replace(records[r.run_id], table=r.table)
    return Studied(results, records)


def declared(studied: Studied, seeds: SeedsDesign | None, ordered: tuple[str, ...], effect: float) -> Studied:
    """The same runs, their records declaring the study's seeds design, effect and ordered factors, and each run's stage
    under that design (its seed's place among its cell's seeds; the combined cell's among the seeds after the first
    stage's, a stage later; None for its runs on the first stage's seeds, which its test does not use): for runs made
    before the study declared them, or under an earlier rule."""
    stage = {}
    if seeds is not None:
        cells: dict[tuple, list[int]] = {}
        for r in studied.results:
            cells.setdefault((r.study, r.model, r.table, r.cell), []).append(r.seed)
        for r in studied.results:
            mine = sorted(set(cells[(r.study, r.model, r.table, r.cell)]))
            if r.cell != COMBINED:
                stage[r.run_id] = seeds.stage_of(mine.index(r.seed))
            elif r.seed >= seeds.first:
                stage[r.run_id] = 1 + seeds.stage_of([s for s in mine if s >= seeds.first].index(r.seed))
    results = [replace(r, stage=stage.get(r.run_id)) for r in studied.results]
    records = {run_id: replace(r, seeds=seeds, ordered=ordered, stage=stage.get(run_id), effect=effect) for run_id, r in studied.records.items()}
    return Studied(results, records)


def export_files(paths: list[Path], allow_none: bool = False) -> list[Path]:
    """The export CSVs named, a folder standing for every *.csv export in it (a search's *_trials.json is read elsewhere)."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.glob("*.csv") if p.with_suffix(".npz").is_file())
        elif path.suffix == ".csv":
            found.append(path)
        elif not path.name.endswith("_trials.json"):
            raise UserError(f"--from takes export .csv files (or a search's _trials.json) or folders holding them, not {path}")
    if not found and not allow_none:
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
