"""Statistics whose unit of replication is the training seed.

A cell is compared with the baseline through the per-seed differences of test accuracy (both
trained with the same seed): their mean, a t interval, a paired t-test, and TOST for equivalence
within a margin. Holm's step-down method corrects for the several cells of one table. McNemar's
test on the images of one seed pair is kept as a descriptive figure: it covers the sampling of the
test set only, not the randomness of training.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05
MIN_SEEDS = 3  # fewer paired seeds than this: no verdict


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass
class Paired:
    n: int
    diff: float  # mean of the per-seed differences
    sd: float
    ci_low: float  # 95% t interval of the mean difference
    ci_high: float
    p: float  # two-sided paired t-test of a zero mean difference
    p_tost: float  # TOST: the larger of the two one-sided p-values against -margin and +margin


def paired_t(diffs: list[float], margin: float, level: float = 0.95) -> Paired:
    """Paired t statistics of per-seed differences (needs two or more)."""
    n = len(diffs)
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 differences, got {n}")
    mean, sd = mean_std(diffs)
    se = sd / math.sqrt(n)
    df = n - 1
    if se == 0.0:  # every seed moved by exactly the same amount (e.g. identical runs: all zero)
        p = 1.0 if mean == 0.0 else 0.0
        p_tost = 0.0 if abs(mean) < margin else 1.0
        return Paired(n, mean, sd, mean, mean, p, p_tost)
    half = scipy_stats.t.ppf(0.5 + level / 2, df) * se
    p = 2 * scipy_stats.t.sf(abs(mean) / se, df)
    p_above_lower = scipy_stats.t.sf((mean + margin) / se, df)  # H0: mean <= -margin
    p_below_upper = scipy_stats.t.cdf((mean - margin) / se, df)  # H0: mean >= +margin
    return Paired(n, mean, sd, mean - half, mean + half, float(p), float(max(p_above_lower, p_below_upper)))


def holm(p) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values along the last axis, in the order given (monotone, capped at 1)."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * (p.shape[-1] - np.arange(p.shape[-1]))
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, np.minimum(1.0, np.maximum.accumulate(ranked, axis=-1)), axis=-1)
    return adjusted


def power_paired_t(n, diff: float, sd: float, level: float):
    """Power of a two-sided paired t-test at `level` with n seeds, true mean difference `diff`, per-seed SD `sd` (noncentral t)."""
    n = np.asarray(n, dtype=float)
    if sd == 0:
        return np.where(n >= 2, float(diff != 0), 0.0)
    df = n - 1
    critical = scipy_stats.t.ppf(1 - level / 2, df)
    shift = abs(diff) * np.sqrt(n) / sd
    # scipy's noncentral t returns NaN far out in a tail: there the far tail is 0 and the near one 1.
    towards = np.nan_to_num(scipy_stats.nct.sf(critical, df, shift), nan=1.0)
    away = np.nan_to_num(scipy_stats.nct.cdf(-critical, df, shift), nan=0.0)
    return towards + away


def seeds_for_power(power_of, target: float = 0.8, most: int = 50) -> int | None:
    """The fewest paired seeds (MIN_SEEDS to `most`) at which `power_of(n)` reaches `target`; None if none does.

    Power grows with n for both tests, so a bisection finds it in a few evaluations.
    """
    def reaches(n: int) -> bool:
        return float(np.asarray(power_of(np.array([n]))).ravel()[0]) >= target

    if not reaches(most):
        return None
    low, high = MIN_SEEDS - 1, most  # reaches(high) holds; reaches(low) is taken as false
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if reaches(middle) else (middle, high)
    return high


def discordant(base, other) -> tuple[int, int]:
    """(b, c): images only the baseline got right, and images only the other model got right (arrays or tensors of bools)."""
    base, other = np.asarray(base, dtype=bool), np.asarray(other, dtype=bool)
    return int((base & ~other).sum()), int((~base & other).sum())


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under H0 the b + c discordant images split 50/50."""
    n = b + c
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * scipy_stats.binom.cdf(min(b, c), n, 0.5)))
