"""What the sequential design promises, measured on simulated tables of 7 cells (fmnist/sequential.py).

    python scripts/sequential_simulation.py --tables 1000 --out results/stats/sequential.md

Each table: 7 cells against one baseline, per-image churn and shared image difficulty as in
fmnist/simulate.py, the cells' effects varying from seed to seed with the SD in the first column.
The design is the study files' (first 3, step 2, max 10); stages, Holm's reallocation, futility and
the repeated intervals are all in the loop, as `python -m fmnist.run -m study=...` runs them.
"""

import argparse
import shlex
import sys
from pathlib import Path

from fmnist.sequential import SeedsDesign
from fmnist.simulate import TableModel, churn_sd_points, publish, tally

MARGIN = 0.3
SDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
CELLS = 7


def error_rows(tables: int, design: SeedsDesign) -> list[str]:
    rows = []
    for sd in SDS:
        null = tally(TableModel((0.0,) * CELLS, sd), tables, design, MARGIN, rng_seed=1)
        edge = tally(TableModel(tuple(MARGIN * (-1) ** i for i in range(CELLS)), sd), tables, design, MARGIN, rng_seed=2)
        mixed = tally(TableModel((-1.0, -0.5, 0.0, 0.3, 0.5, 1.0, 2.0), sd), tables, design, MARGIN, rng_seed=3)
        spread = (2 * churn_sd_points() ** 2 + sd**2) ** 0.5
        rows.append(
            f"| {sd:.1f} | {spread:.2f} | {null.any_false_call:.1%} | {null.seeds_per_cell:.1f} | {edge.false_equivalent:.1%} "
            f"| {min(null.coverage, edge.coverage, mixed.coverage):.1%} |"
        )
    return rows


def fixed_with_power(model: TableModel, target: float, tables: int, most: int) -> tuple[int | None, float]:
    """The fewest seeds per cell whose fixed design (one look, Holm) has at least `target` power; (None, power at most) if none."""
    low, high = 2, most
    at_most = tally(TableModel(model.effects, model.effect_sd, most), tables, None, MARGIN, rng_seed=5).power
    if at_most < target:
        return None, at_most
    while high - low > 1:
        middle = (low + high) // 2
        if tally(TableModel(model.effects, model.effect_sd, middle), tables, None, MARGIN, rng_seed=5).power >= target:
            high = middle
        else:
            low = middle
    return high, target


def efficiency_rows(tables: int, design: SeedsDesign) -> list[str]:
    rows = []
    for effect in (0.5, 1.0, 2.0):
        for sd in (0.0, 0.25, 0.5):
            model = TableModel((effect, -effect) + (0.0,) * (CELLS - 2), sd, design.max)
            seq = tally(model, tables, design, MARGIN, rng_seed=4)
            n, _ = fixed_with_power(model, seq.power, tables, design.max)
            if n is None:
                fixed = f"none up to {design.max} seeds"
                ratio = "—"
            else:
                runs = n * (CELLS + 1)
                fixed = f"{n} seeds: {runs} runs"
                ratio = f"{seq.runs / runs:.2f}"
            rows.append(f"| ±{effect:.1f} | {sd:.2f} | {seq.power:.1%} | {seq.runs:.1f} | {fixed} | {ratio} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=1000, help="simulated tables per row")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args()
    design = SeedsDesign()
    command = shlex.join(["python", "scripts/sequential_simulation.py", *sys.argv[1:]])
    text = "\n".join([
        f"# The sequential design (seeds: {design.describe()}) on simulated tables, {args.tables} per row",
        "",
        f"Made by `{command}`.",
        "",
        f"Tables of {CELLS} cells against one baseline, α = 0.05, equivalence margin ±{MARGIN} points. The rule: sequential "
        "p-values from the weighted minimum p over the looks, Holm across the cells at every stage, futility when 80% power "
        "either way would need more than max seeds, repeated 95% confidence intervals (fmnist/sequential.py).",
        "",
        "## Error control",
        "",
        "- *false better/worse*: share of null tables (every cell's true difference 0) with a better or worse verdict anywhere;",
        "- *false equivalent*: share of cells whose true difference is exactly ±margin called equivalent;",
        "- *coverage*: share of cells whose printed repeated 95% CI holds the true difference (the lowest over the null table, the "
        "±margin table and a table with differences −1, −0.5, 0, +0.3, +0.5, +1, +2 points).",
        "",
        "| seed-level SD of the effect, points | SD of per-seed differences, points | false better/worse (any cell) | seeds per cell (null) "
        "| false equivalent (per cell) | coverage |",
        "|---:|---:|---:|---:|---:|---:|",
        *error_rows(args.tables, design),
        "",
        "## Seeds against a fixed design of equal power",
        "",
        "Two of the 7 cells differ from the baseline by +Δ and −Δ, five not at all. *power*: share of the two called better/worse "
        "in the right direction. *runs*: training runs per table, each cell's seeds plus the baseline's. The fixed design runs n "
        "seeds of every cell and tests once (Holm); the fewest n whose power is at least the sequential design's is found by "
        "the same simulation.",
        "",
        "| Δ, points | seed-level SD of the effect | sequential: power | sequential: runs per table | fixed design of equal power | runs, sequential / fixed |",
        "|---:|---:|---:|---:|---|---:|",
        *efficiency_rows(args.tables, design),
        "",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
