"""The README's and the docs' results say what the committed tables say.

The results block of docs/results.md is written from the committed tables by `python -m
fmnist.report.summary --readme docs/results.md`; here it is written again and compared. And every decimal
figure anywhere in the prose of the README and the docs (outside code) is one that some committed result,
its README, or a study file prints: a figure typed by hand that no table holds is how prose drifts.
"""

import re
from pathlib import Path

import pytest

from fmnist.report import summary

ROOT = Path(__file__).resolve().parent.parent
FIGURE = re.compile(r"(?<![\w.])[−+-]?\d{1,3}(?:,\d{3})*\.\d+%?")


def prose(text: str) -> str:
    """The README without its fenced code blocks and inline code (commands, not claims)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`]*`", "", text)


def plain(figure: str) -> str:
    return figure.replace("−", "-").lstrip("+-").replace(",", "").rstrip("%")


def committed_figures() -> set[str]:
    sources = [*ROOT.glob("results/**/*.md"), *ROOT.glob("results/**/*.csv"), *ROOT.glob("conf/**/*.yaml")]
    found = set()
    for path in sources:
        if "/runs/" in str(path):
            continue
        for figure in FIGURE.findall(path.read_text()):
            found.add(plain(figure))
            if "." in figure:  # a table's 0.0047 or 4.8213 may be printed rounded in prose
                value = float(plain(figure))
                found |= {f"{value:.{d}f}" for d in range(0, 4)}
    return found


def test_the_results_block_is_what_the_committed_tables_give():
    text = (ROOT / "docs" / "results.md").read_text()
    block = text[text.index(summary.BEGIN): text.index(summary.END) + len(summary.END)]
    assert block == summary.summary(ROOT), "the docs' results block differs from the tables: run python -m fmnist.report.summary --readme docs/results.md"


@pytest.mark.parametrize("page", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))])
def test_every_figure_in_the_prose_is_in_a_committed_table(page):
    known = committed_figures()
    text = prose((ROOT / page).read_text())
    stray = sorted({f for f in FIGURE.findall(text) if plain(f) not in known})
    assert not stray, f"figures in {page} that no committed result prints: {stray}"


def test_the_block_reads_the_table_it_names():
    # A table's verdict, changed by hand, changes the block: it is read from the CSVs, not typed.
    cells = summary.read_table(ROOT / "results" / "table2" / "table2_mlp.csv")
    sgd = next(c for c in cells if c["cell"] == "sgd")
    assert f"worse: {sgd.number('diff', True)}" in summary.summary(ROOT)
