"""Simulated studies, for checking that a verdict means what it says (tests/test_stats.py,
tests/test_sequential.py, scripts/null_simulation.py, scripts/sequential_simulation.py).

The image model: image i in run r is right when OFFSET + z_i + shift_r + e_ir > 0. Image difficulty z
is shared by every run (hard images stay hard); each run adds its own per-image churn e and a
seed-level shift; a cell's shift differs from its baseline's (same seed) by its mean effect plus a
seed-to-seed draw. `simulate_null_studies` draws every image; `simulate_tables` draws each run's
accuracy from the same model at once (given the images, a run's number of right answers is a sum of
independent coin flips, so its accuracy is normal with the model's mean and per-image variance),
which is fast enough for thousands of whole sequential studies.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

from fmnist.stats import mcnemar_exact

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


@dataclass
class TableModel:
    """A table of cells against one baseline: each cell's mean effect and the seed-to-seed SD of effects (points)."""

    effects: tuple[float, ...]
    effect_sd: float
    seeds: int = 10

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """(cells, seeds) per-seed differences cell - baseline, in points; cells share each seed's baseline run."""
        churn = churn_sd_points()
        cells = len(self.effects)
        base = churn * rng.standard_normal(self.seeds)  # the seed's shift cancels in every difference
        effect = np.asarray(self.effects)[:, None] + self.effect_sd * rng.standard_normal((cells, self.seeds))
        cell = effect + churn * rng.standard_normal((cells, self.seeds))
        return cell - base[None, :]


def simulate_tables(model: TableModel, tables: int, rng_seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(rng_seed)
    return [model.draw(rng) for _ in range(tables)]


# ----- the whole sequential procedure on simulated tables -----


@dataclass
class Tally:
    """What the design did over many simulated tables of one model."""

    tables: int
    any_false_call: float  # share of tables with a better/worse on a cell whose true difference is zero
    false_equivalent: float  # share of cells at exactly +-margin called equivalent
    coverage: float  # share of cells whose printed repeated CI holds the true difference
    power: float  # share of cells with a real effect called better/worse in the right direction
    seeds_per_cell: float  # mean paired seeds a cell received
    runs: float  # mean training runs per table: each cell's seeds plus the baseline's


def tally(model: TableModel, tables: int, design, margin: float, rng_seed: int = 0) -> Tally:
    """Run the design (a `SeedsDesign`, or None for one fixed look at `model.seeds`) on simulated tables."""
    from fmnist.sequential import Comparison, decide

    effects = np.asarray(model.effects)
    null, at_margin, real = effects == 0, np.isclose(np.abs(effects), margin), (effects != 0) & ~np.isclose(np.abs(effects), margin)
    false_call = covered = equivalent = called = seeds = runs = 0
    for diffs in simulate_tables(model, tables, rng_seed):
        names = [f"c{i}" for i in range(len(effects))]
        outcome = decide([Comparison(n, list(d), [False] * len(d)) for n, d in zip(names, diffs)], design, margin)
        decisions = [outcome.decisions[n] for n in names]
        verdicts = np.array([d.verdict for d in decisions])
        false_call += bool(np.any(np.isin(verdicts[null], ("better", "worse"))))
        equivalent += int(np.sum(verdicts[at_margin] == "equivalent"))
        right = np.where(effects > 0, "better", "worse")
        called += int(np.sum((verdicts == right)[real]))
        covered += sum(d.rci is not None and d.rci[0] <= e <= d.rci[1] for d, e in zip(decisions, effects))
        used = [d.n for d in decisions]
        seeds += sum(used)
        runs += sum(used) + max(used)
    cells = len(effects)
    return Tally(
        tables, false_call / tables, equivalent / max(1, tables * int(at_margin.sum())), covered / (tables * cells),
        called / max(1, tables * int(real.sum())), seeds / (tables * cells), runs / tables,
    )


def publish(text: str, out: Path | None) -> None:
    """Print a simulation's Markdown and, with `out`, write it there (the scripts' --out)."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
