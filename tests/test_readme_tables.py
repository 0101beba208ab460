"""The README's per-model Table 2 tables say what the committed tables say, figure for figure.

The README's tables are written by hand from `results/table2/table2_<model>.md` (fewer columns, the
interval next to Δ); when a stage lands, a row left behind would claim what no command prints.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {"mlp": "**MLP**", "vgg": "**VGG**", "resnet18": "**ResNet-18**"}


def plain(text: str) -> str:
    """One spelling for a figure: the README prints minus signs, the tables hyphens; an em dash is empty."""
    text = text.strip().replace("−", "-")
    return "" if text == "—" else text


def first_table(lines: list[str]) -> list[dict[str, str]]:
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([plain(c) for c in line.strip().strip("|").split("|")])
    header, rows = block[0], block[2:]
    return [dict(zip(header, row)) for row in rows]


def readme_table(model: str) -> list[dict[str, str]]:
    text = (ROOT / "README.md").read_text()
    study = text[text.index("## Reproducing the study (Table 2)"):]
    return first_table(study[study.index(SECTIONS[model]):].splitlines())


def committed_table(model: str) -> dict[str, dict[str, str]]:
    rows = first_table((ROOT / "results" / "table2" / f"table2_{model}.md").read_text().splitlines())
    return {row["cell"]: row for row in rows}


def expected(column: str, row: dict[str, str]) -> str:
    if column == "Δ pp [95% repeated CI]":
        ci = row["95% repeated CI"]
        return row["Δ pp"] if ci in ("", "[+0.00, +0.00]") else f"{row['Δ pp']} {ci}"
    names = {"test acc %": "test acc % (mean ± std)", "p (plain t)": "p"}
    return row[names.get(column, column)]


@pytest.mark.parametrize("model", SECTIONS)
def test_readme_rows_match_the_committed_table(model):
    committed = committed_table(model)
    rows = readme_table(model)
    cells = [row["cell"].split()[0] for row in rows]  # "sgd (lr 1e-3)" is the table's "sgd"
    assert set(cells) == set(committed), "a cell missing or extra"
    for cell, row in zip(cells, rows):
        for column, shown in row.items():
            if column == "cell" or (cell == "baseline" and not shown):  # the baseline's row leaves its verdict blank
                continue
            want = expected(column, committed[cell])
            if column == "verdict":  # the README may add the margin or the seeds needed in brackets
                assert shown.split(" (")[0] == want, f"{model} {cell}: verdict {shown!r}, table {want!r}"
            else:
                assert shown == want, f"{model} {cell}, {column}: README {shown!r}, table {want!r}"
