"""Simulated null studies, for checking that a verdict means what it says (tests/test_stats.py,
scripts/null_simulation.py).

A cell whose effect on accuracy is zero on average but varies from seed to seed, on top of
per-image churn between runs, with image difficulty shared across seeds so hard images stay hard.
"""

import math

import numpy as np

from fmnist.stats import mcnemar_exact


def simulate_null_studies(studies: int, seed_sd_points: float, seeds: int = 5, images: int = 10_000, rng_seed: int = 0):
    """Per study: (per-seed accuracy differences in points, pooled McNemar p) for a cell with zero mean effect.

    Image difficulty z is shared by every run (hard images stay hard); each run adds its own per-image churn
    and a seed-level shift; the cell's shift differs from its baseline's by a draw with SD `seed_sd_points`
    (converted to latent units at the ~90% operating point), zero on average.
    """
    rng = np.random.default_rng(rng_seed)
    difficulty_scale, churn_scale, offset = 2.5, 1.0, 3.4  # about 90% accuracy, ~4% of images flip between seeds
    density = math.exp(-0.5 * (offset / math.hypot(difficulty_scale, churn_scale)) ** 2) / math.sqrt(2 * math.pi)
    per_point = math.hypot(difficulty_scale, churn_scale) / density / 100  # latent shift per accuracy point
    diffs, pooled = [], []
    for _ in range(studies):
        z = rng.standard_normal(images) * difficulty_scale
        seed_shift = rng.standard_normal((seeds, 1)) * 0.3 * per_point
        effect = rng.standard_normal((seeds, 1)) * seed_sd_points * per_point
        base = offset + z + seed_shift + rng.standard_normal((seeds, images)) * churn_scale > 0
        cell = offset + z + seed_shift + effect + rng.standard_normal((seeds, images)) * churn_scale > 0
        diffs.append(100 * (cell.mean(1) - base.mean(1)))
        b, c = int((base & ~cell).sum()), int((~base & cell).sum())
        pooled.append(mcnemar_exact(b, c))
    return diffs, pooled
