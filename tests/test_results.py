"""Every committed study table is what its exports give: the command in its "Made by" line reproduces it."""

import re
import shlex
from pathlib import Path

import pytest

from fmnist import report, sequential
from fmnist.report.cli import read_study_file
from fmnist.results import export_files, read_export

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
EXPORT_FOLDERS = sorted({p.parent for p in RESULTS.glob("*/runs/*.csv")})


def made_by(path: Path) -> list[str] | None:
    found = re.search(r"^Made by `python -m fmnist\.report (--from [^`]*)`", path.read_text(), re.M)
    return shlex.split(found.group(1)) if found else None


COMMANDS = sorted({tuple(args) for md in RESULTS.glob("*/*.md") if (args := made_by(md))})


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_committed_tables_are_rebuilt_by_the_command_they_name(args, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the "Made by" lines name relative paths
    monkeypatch.setattr(sequential, "NULL_DRAWS", sequential.DRAWS)  # the committed tables' null distributions
    out = Path(args[args.index("--out") + 1])
    rebuilt_args = [*args]
    rebuilt_args[args.index("--out") + 1] = str(tmp_path)
    report.main(rebuilt_args)
    rebuilt = sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".md", ".csv", ".tex"))
    assert rebuilt, "the exports gave no table"
    for name in rebuilt:
        committed = out / name
        text = (tmp_path / name).read_text().replace(f"--out {tmp_path}", f"--out {out}")
        assert committed.exists() and text == committed.read_text(), f"{committed} differs from what its exports give"


def test_every_export_folder_has_its_tables():
    assert {Path(a[a.index("--from") + 1]) for a in COMMANDS} >= {p.relative_to(ROOT) for p in EXPORT_FOLDERS}


@pytest.mark.parametrize("runs", EXPORT_FOLDERS, ids=lambda p: p.parent.name)
def test_exports_hold_whole_seeds_from_one_commit_per_cell_and_name_their_design(runs):
    results = [r for path in export_files([runs]) for r in read_export(path).results]
    assert all(len(r.correct) == 10_000 for r in results)  # the full test set, every run
    commits = {}
    for r in results:
        commits.setdefault((r.study, r.model, r.cell), set()).add(r.git_commit)  # two searches' confirmations: two baselines
    assert all(len(c) == 1 and "dirty" not in next(iter(c)) for c in commits.values())
    records = [r for path in export_files([runs]) for r in read_export(path).records.values()]
    assert records and all(r.table for r in records)
    for r in records:  # every committed table is read under its study's design: a study file's seeds design, or the fixed seeds
        study_file = ROOT / "conf" / "study" / f"{r.study}.yaml"  # of a search's confirmation (`search.confirm.seeds`)
        assert r.seeds == (read_study_file(study_file).seeds if study_file.exists() else None), f"{r.study}: {r.seeds}"
    assert any(r.seeds is not None for r in records) or all(r.study.endswith("-confirm") for r in records)
