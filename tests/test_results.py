"""Every committed study table is what its exports give: `python -m fmnist.report --from` reproduces it."""

from pathlib import Path

import pytest

from fmnist import report
from fmnist.results import export_files, read_export

RESULTS = Path(__file__).resolve().parent.parent / "results"
EXPORT_FOLDERS = sorted({p.parent for p in RESULTS.glob("*/runs/*.csv")})


@pytest.mark.parametrize("runs", EXPORT_FOLDERS, ids=lambda p: p.parent.name)
def test_committed_tables_are_rebuilt_from_their_exports(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(RESULTS.parent)  # the "Made by" line names relative paths
    out = runs.parent
    report.main(["--from", str(runs.relative_to(RESULTS.parent)), "--out", str(tmp_path)])
    rebuilt = sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".md", ".csv", ".tex"))
    assert rebuilt, "the exports gave no table"
    for name in rebuilt:
        committed = out / name
        text = (tmp_path / name).read_text().replace(f"--out {tmp_path}", f"--out {out.relative_to(RESULTS.parent)}")
        assert committed.exists() and text == committed.read_text(), f"{committed} differs from what its exports give"


@pytest.mark.parametrize("runs", EXPORT_FOLDERS, ids=lambda p: p.parent.name)
def test_exports_hold_whole_seeds_from_one_commit_per_cell_and_name_their_design(runs):
    results = [r for path in export_files([runs]) for r in read_export(path).results]
    assert all(len(r.correct) == 10_000 for r in results)  # the full test set, every run
    commits = {}
    for r in results:
        commits.setdefault((r.model, r.cell), set()).add(r.git_commit)
    assert all(len(c) == 1 and "dirty" not in next(iter(c)) for c in commits.values())
    records = [r for path in export_files([runs]) for r in read_export(path).records.values()]
    assert all(r.seeds is not None and r.table for r in records)  # every committed table is read under its study's design
