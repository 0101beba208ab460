"""What a study's seeds design will cost and show, before it runs and after each stage.

    python -m fmnist.plan conf/study/table2.yaml                        # the study file's effect, design and planned SD
    python -m fmnist.plan conf/study/table2.yaml --sd 0.7               # a guessed SD of per-seed differences
    python -m fmnist.plan conf/study/table2.yaml --sd-from results/table2/runs/resnet18.csv   # an earlier export's

A table of the study's comparisons is simulated many times (fmnist/simulate.py, the rule of
fmnist/sequential.py): with no effect anywhere, and with one cell at +effect. Printed: the power to call
that cell, the runs each way, the most a table can take, and the same for the fixed design of `max`
seeds. The report prints the same in its footnote and, after each stage, an outlook for each open cell
from its own observed SD (`outlook`).
"""

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist import stats
from fmnist.errors import UserError, require
from fmnist.sequential import Rule, _look_stats, weights
from fmnist.simulate import TableModel, operate, operate_fixed

TABLES = 2000


@dataclass
class Forecast:
    """One design on one table shape, and the fixed design beside it."""

    rule: Rule
    sd: float
    power: float  # the cell at +effect called better
    fixed_power: float
    runs_null: float  # mean runs of a table with no effect anywhere
    runs_effect: float  # ... with one cell at +effect
    runs_most: int  # every cell to max, the baseline as far as the latest
    fixed_runs: float
    seeds_null: float  # mean seeds of a cell with no effect
    seeds_effect: float  # ... of the cell at +effect
    tables: int

    def lines(self) -> list[str]:
        r, d = self.rule, self.rule.design
        return [
            f"Design for {r.cells} comparisons (seeds: {d.describe()}; effect ±{r.effect:g} points; equivalence ±{r.margin:g}), "
            f"on tables whose per-seed differences have SD {self.sd:.2f} points, {self.tables} simulated tables each way:",
            f"- a cell changed by +{r.effect:g} points is called better with {self.power:.0%} power after {self.seeds_effect:.1f} "
            f"seeds on average (the fixed design of {d.max} seeds: {self.fixed_power:.0%});",
            f"- expected runs: {self.runs_null:.0f} with no effect anywhere, {self.runs_effect:.0f} with that one cell changed "
            f"(a cell with no effect gets {self.seeds_null:.1f} seeds); at most {self.runs_most}; the fixed design: "
            f"{self.fixed_runs:.0f} ({self.runs_null / self.fixed_runs:.2f}x and {self.runs_effect / self.fixed_runs:.2f}x of it).",
        ]


def forecast(rule: Rule, sd: float, lagged: bool, tables: int = TABLES, rng_seed: int = 0) -> Forecast:
    """The rule on a table of `rule.cells` comparisons at SD `sd`, the last one lagged (a combined cell) if `lagged`."""
    cells = rule.cells
    lag = tuple(int(lagged and i == cells - 1) for i in range(cells))
    null = TableModel((0.0,) * cells, (sd,) * cells, lag=lag)
    effect = TableModel((rule.effect,) + (0.0,) * (cells - 1), (sd,) * cells, lag=lag)
    at_null, at_effect = operate(rule, null, tables, rng_seed), operate(rule, effect, tables, rng_seed + 1)
    fixed = operate_fixed(effect, rule.design.max, tables, rule.margin, rng_seed + 1, first=rule.design.first if lagged else 0)
    most = cells * rule.design.max + rule.design.max + (rule.design.first if lagged else 0)
    return Forecast(rule, sd, float(at_effect.power[0]), float(fixed.power[0]), at_null.runs, at_effect.runs, most, fixed.runs,
                    float(at_null.seeds.mean()), float(at_effect.seeds[0]), tables)


@dataclass
class Outlook:
    """One open cell from its last look on, at its observed SD: (power, expected seeds) per assumed true change."""

    ends: dict[str, tuple[float, float]]  # "effect", "trend", "null" -> (power, mean seeds it ends with)
    trend: float  # its mean difference so far, points
    most: int  # the design's max

    def text(self, effect: float) -> str:
        (p_effect, n_effect), (p_trend, n_trend), (_, n_null) = self.ends["effect"], self.ends["trend"], self.ends["null"]
        return (f"from here, at its observed SD: {p_effect:.0%} power if the true change is ±{effect:g} (about {n_effect:.1f} seeds), "
                f"{p_trend:.0%} if it is the {self.trend:+.2f} seen so far ({n_trend:.1f} seeds), {n_null:.1f} seeds if there is none; "
                f"at most {self.most}")


def outlook(rule: Rule, diffs: list[float], looked: int, least: float, level: float, paths: int = TABLES, rng_seed: int = 0) -> Outlook:
    """Continue one open cell past its last look at `looked` seeds (weighted minimum p so far `least`) to the end of the
    design, at the level it now faces: the seeds it already has as they are, the rest drawn at its observed SD with a
    true change of +-effect (in the direction seen), the change seen so far, or none."""
    looks, w, bounds, efficacy = rule.looks, weights(rule.looks), rule.bounds(), rule.efficacy()
    diffs = list(diffs[: looks[-1]])
    n0 = len(diffs)
    trend, sd = stats.mean_std(diffs)
    sd = sd if sd == sd and sd > 0 else rule.design.sd
    sign = 1.0 if trend >= 0 else -1.0
    rng = np.random.default_rng(rng_seed)
    ended = {}
    for name, change in (("effect", sign * rule.effect), ("trend", trend), ("null", 0.0)):
        future = change + sd * rng.standard_normal((paths, looks[-1] - n0))
        full = np.concatenate([np.broadcast_to(np.asarray(diffs, float), (paths, n0)), future], axis=1)
        sums, squares = np.cumsum(full, axis=1), np.cumsum(full**2, axis=1)
        running, called, used = np.ones(paths, bool), np.zeros(paths, bool), np.full(paths, looks[-1])
        best = np.full(paths, least)
        for k, n in enumerate(looks):
            if n <= looked:
                continue
            _, t, p, _ = _look_stats(sums[:, n - 1], squares[:, n - 1], n, rule.margin)
            best = np.where(running, np.minimum(best, p / w[k]), best)
            hit = running & (efficacy.p_value(best) < level)
            called |= hit
            stop = hit | (running & (np.abs(t) < bounds[k]) & (k < len(looks) - 1))
            used = np.where(running & stop, n, used)
            running &= ~stop
        ended[name] = (float(called.mean()), float(used.mean()))
    return Outlook(ended, trend, looks[-1])


# ----- the command -----


def family_size(study) -> int:
    """A study's comparisons: its levels, and the combined cell where two or more factors can be combined."""
    levels = sum(len(levels) for levels in study.factors.values())
    return levels + (1 if len(study.factors) > 1 else 0)


def sd_from_export(path: Path) -> float:
    """The root mean square of the SDs of per-seed differences of an export's cells (each cell against its baseline)."""
    from fmnist.evidence import gather, paired
    from fmnist.results import read_export
    from fmnist.study import BASELINE

    studied = read_export(path)
    spreads = []
    for (study, model, table) in sorted({(r.study, r.model, r.table) for r in studied.results}):
        cells = gather([r for r in sorted(studied.results, key=lambda r: r.start_time) if (r.study, r.model, r.table) == (study, model, table)])
        base = cells.get(BASELINE)
        for name, cell in cells.items():
            seeds = paired(base, cell) if base and name != BASELINE else []
            diffs = [100 * (cell.by_seed[s].test_acc - base.by_seed[s].test_acc) for s in seeds]
            if len(diffs) >= 2 and any(d != 0 for d in diffs):
                spreads.append(stats.mean_std(diffs)[1])
    require(bool(spreads), f"{path} has no cell with two or more seeds paired with its baseline; give --sd instead")
    return math.sqrt(sum(s * s for s in spreads) / len(spreads))


def main(argv: list[str] | None = None) -> None:
    from fmnist.report.cli import read_study_file

    parser = argparse.ArgumentParser(prog="python -m fmnist.plan", description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="a study file, e.g. conf/study/table2.yaml")
    guess = parser.add_mutually_exclusive_group()
    guess.add_argument("--sd", type=float, help="the SD of per-seed differences to plan for, points (default: the study's seeds.sd)")
    guess.add_argument("--sd-from", type=Path, metavar="EXPORT.csv", help="take that SD from an earlier export of the study")
    parser.add_argument("--effect", type=float, help="the smallest difference worth reporting, points (default: the study's)")
    parser.add_argument("--tables", type=int, default=TABLES, help=f"simulated tables each way (default {TABLES})")
    args = parser.parse_args(argv)
    try:
        study = read_study_file(args.study)
        require(study.seeds is not None, f"{args.study} declares no seeds design (seeds: {{first, step, max, sd}}); nothing to plan")
        sd = args.sd if args.sd is not None else sd_from_export(args.sd_from) if args.sd_from else study.seeds.sd
        require(sd > 0 and math.isfinite(sd), f"--sd must be > 0 points, got {sd}")
        effect = study.effect if args.effect is None else args.effect
        require(effect > 0, f"--effect must be > 0 points, got {effect}")
        require(args.tables >= 100, f"--tables must be >= 100, got {args.tables}")
        rule = Rule(study.seeds, effect, study.margin, family_size(study))  # the bounds the study plans; the tables at `sd`
        print("\n".join(forecast(rule, sd, len(study.factors) > 1, args.tables).lines()))
    except UserError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
