"""Simulated studies, for checking that a verdict means what it says (tests/test_stats.py,
tests/test_sequential.py, scripts/null_simulation.py, scripts/sequential_simulation.py, python -m fmnist.plan).

The image model: image i in run r is right when OFFSET + z_i + shift_r + e_ir > 0. Image difficulty z
is shared by every run (hard images stay hard); each run adds its own per-image churn e and a
seed-level shift; a cell's shift differs from its baseline's (same seed) by its mean effect plus a
seed-to-seed draw. `simulate_null_studies` draws every image. For whole sequential studies, thousands
of tables at once, `TableModel` draws the per-seed differences themselves: normal, with each cell's
mean and SD (given the images, a run's number of right answers is a sum of independent coin flips, so
its accuracy is normal), sharing the baseline run's own noise; `operate` runs the rule on them and
`operate_fixed` the fixed design it is judged against.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

from fmnist.stats import holm, mcnemar_exact

DIFFICULTY, CHURN, OFFSET = 2.5, 1.0, 3.4  # about 90% accuracy, ~4% of images flip between seeds
IMAGES = 10_000
SEED_SHIFT_SD = 0.3  # points: a seed's own luck, shared by every cell trained with that seed


def _per_point() -> float:
    """Latent shift per accuracy point at the model's operating point."""
    spread = math.hypot(DIFFICULTY, CHURN)
    density = math.exp(-0.5 * (OFFSET / spread) ** 2) / math.sqrt(2 * math.pi)
    return spread / density / 100


def simulate_null_studies(studies: int, seed_sd_points: float, seeds: int = 5, images: int = IMAGES, rng_seed: int = 0):
    """Per study: (per-seed accuracy differences in points, pooled McNemar p) for a cell with zero mean effect.

    The cell's shift differs from its baseline's by a draw with SD `seed_sd_points`, zero on average.
    """
    rng = np.random.default_rng(rng_seed)
    per_point = _per_point()
    diffs, pooled = [], []
    for _ in range(studies):
        z = rng.standard_normal(images) * DIFFICULTY
        seed_shift = rng.standard_normal((seeds, 1)) * SEED_SHIFT_SD * per_point
        effect = rng.standard_normal((seeds, 1)) * seed_sd_points * per_point
        base = OFFSET + z + seed_shift + rng.standard_normal((seeds, images)) * CHURN > 0
        cell = OFFSET + z + seed_shift + effect + rng.standard_normal((seeds, images)) * CHURN > 0
        diffs.append(100 * (cell.mean(1) - base.mean(1)))
        b, c = int((base & ~cell).sum()), int((~base & cell).sum())
        pooled.append(mcnemar_exact(b, c))
    return diffs, pooled


def churn_sd_points(images: int = IMAGES) -> float:
    """SD of one run's accuracy (points) from per-image churn alone: 100 sqrt(E[p (1 - p)] / images).

    p = Phi((OFFSET + z) / CHURN) is an image's chance of being right; E over the difficulty z.
    """
    z = scipy_stats.norm.ppf((np.arange(20_000) + 0.5) / 20_000) * DIFFICULTY
    p = scipy_stats.norm.cdf((OFFSET + z) / CHURN)
    return 100 * math.sqrt(float(np.mean(p * (1 - p))) / images)


@dataclass(frozen=True)
class TableModel:
    """A table of cells against one baseline: each cell's true mean difference and the SD of its per-seed differences (points).

    A seed's differences share the baseline run's own noise (SD `shared`, at most a cell's SD / sqrt 2); the rest is the
    cell's. `identical` cells always make the baseline's predictions (NLL beside cross-entropy); `lag` cells start a stage
    late (the combined cell, tested on fresh seeds); `reading` cells are read from the baseline's own run (a shorter schedule),
    so they cost no runs of their own.
    """

    effects: tuple[float, ...]
    sds: tuple[float, ...]
    identical: tuple[bool, ...] = ()
    lag: tuple[int, ...] = ()
    reading: tuple[bool, ...] = ()
    shared: float = 0.19  # about churn_sd_points(): one run's spread from per-image churn

    def flags(self, values: tuple, default) -> np.ndarray:
        return np.array(values or (default,) * len(self.effects))

    def draw(self, rng: np.random.Generator, tables: int, seeds: int) -> np.ndarray:
        """(tables, cells, seeds) per-seed differences, cell minus baseline."""
        sds = np.asarray(self.sds, dtype=float)
        common = np.minimum(self.shared, sds / math.sqrt(2))
        own = np.sqrt(np.maximum(sds**2 - common**2, 0))
        base = rng.standard_normal((tables, 1, seeds))
        noise = rng.standard_normal((tables, len(sds), seeds))
        diffs = np.asarray(self.effects)[None, :, None] + common[None, :, None] * base + own[None, :, None] * noise
        return np.where(self.flags(self.identical, False)[None, :, None], 0.0, diffs)


@dataclass
class Operating:
    """What a design did over many simulated tables of one model."""

    tables: int
    power: np.ndarray  # per cell: called better/worse in its true direction
    false_call: float  # share of tables with a better/worse on a cell whose true difference is zero
    false_equivalent: float  # share of cells at exactly +-margin called equivalent
    coverage: float  # share of cells whose repeated (or plain) 95% CI holds the true difference
    seeds: np.ndarray  # per cell: mean paired seeds it received
    runs: float  # mean training runs per table: the cells' own and the baseline's
    runs_most: int  # the most any table took

    def power_over(self, cells: np.ndarray) -> float:
        return float(self.power[cells].mean()) if cells.any() else float("nan")


def runs_of(model: TableModel, seeds: np.ndarray, first: int) -> np.ndarray:
    """Runs per table: every cell's seeds but readings of the baseline's run, plus the baseline's (as far as any cell goes)."""
    lag = model.flags(model.lag, 0)
    baseline = np.max(np.where(seeds > 0, seeds + lag[None, :] * first, 0), axis=1)
    own = np.where(model.flags(model.reading, False)[None, :], 0, seeds).sum(axis=1)
    return own + baseline


def operate(rule, model: TableModel, tables: int, rng_seed: int = 0) -> Operating:
    """The sequential rule (fmnist.sequential.replay) on `tables` simulated tables."""
    from fmnist.sequential import BETTER, EQUIVALENT, WORSE, rci_bounds, replay

    seeds = rule.design.max
    diffs = model.draw(np.random.default_rng(rng_seed), tables, seeds)
    identical = np.where(model.flags(model.identical, False)[None, :], seeds, 0) * np.ones((tables, 1), int)
    done = replay(rule, diffs, np.full(len(model.effects), seeds), identical, model.flags(model.lag, 0))
    low, high = rci_bounds(rule, diffs, done.n)
    return _tally(model, done.verdict, BETTER, WORSE, EQUIVALENT, low, high, done.n, runs_of(model, done.n, rule.design.first), rule.margin)


def operate_fixed(model: TableModel, seeds: int, tables: int, margin: float, rng_seed: int = 0, alpha: float = 0.05,
                  first: int = 0) -> Operating:
    """The fixed design: every cell `seeds` seeds, one paired t-test each, Holm; the same simulated tables as `operate`.
    A lagged (combined) cell chosen on the first `first` seeds runs the `seeds` after them, the baseline with it."""
    from fmnist.sequential import BETTER, EQUIVALENT, WORSE, _look_stats

    diffs = model.draw(np.random.default_rng(rng_seed), tables, seeds)
    n = np.full(diffs.shape[:2], seeds)
    mean, _, p, p_tost = _look_stats(diffs.sum(axis=2), (diffs**2).sum(axis=2), np.full(diffs.shape[1], seeds)[None, :], margin)
    same = model.flags(model.identical, False)[None, :] & np.ones(n.shape, bool)
    verdict = np.where(holm(p_tost) < alpha, EQUIVALENT, np.where(holm(p) < alpha, np.where(mean > 0, BETTER, WORSE), 0))
    verdict = np.where(same, -1, verdict)
    sd = diffs.std(axis=2, ddof=1)
    half = scipy_stats.t.ppf(1 - alpha / 2, seeds - 1) * sd / math.sqrt(seeds)
    return _tally(model, verdict, BETTER, WORSE, EQUIVALENT, mean - half, mean + half, n, runs_of(model, n, first), margin)


def _tally(model, verdict, better, worse, equivalent, low, high, n, runs, margin) -> Operating:
    effects = np.asarray(model.effects)
    null = (effects == 0) & ~model.flags(model.identical, False)
    at_margin = np.isclose(np.abs(effects), margin)
    right = np.where(effects > 0, better, worse)
    called = np.isin(verdict, (better, worse))
    inside = (low <= effects[None, :]) & (effects[None, :] <= high)
    measured = ~model.flags(model.identical, False)
    return Operating(
        len(verdict), np.mean(verdict == right[None, :], axis=0), float(np.mean(np.any(called[:, null], axis=1))) if null.any() else 0.0,
        float(np.mean(verdict[:, at_margin] == equivalent)) if at_margin.any() else 0.0,
        float(np.mean(inside[:, measured])) if measured.any() else 1.0, n.mean(axis=0), float(runs.mean()), int(runs.max()),
    )


def publish(text: str, out: Path | None) -> None:
    """Print a simulation's Markdown and, with `out`, write it there (the scripts' --out)."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
