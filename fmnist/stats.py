"""Statistics for telling a real accuracy difference from noise, on per-image correctness.

Inputs are boolean tensors `correct[seed, image]`: whether a model trained with that seed got
that test image right. Rows of the two tensors being compared are matched by seed.
"""

import math
from dataclasses import dataclass

import torch


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def discordant(base: torch.Tensor, other: torch.Tensor) -> tuple[int, int]:
    """(b, c): images only the baseline got right, and images only the other model got right."""
    return int((base & ~other).sum()), int((~base & other).sum())


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under H0 the b + c discordant images split 50/50."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def bootstrap_diff_ci(
    base: torch.Tensor, other: torch.Tensor, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of mean accuracy(other) - accuracy(base), resampling seeds and test images.

    Seeds are resampled (when there are several) because training is random; images are resampled,
    the same draw for every seed, because the test set is one sample of the distribution.
    """
    diff = other.float() - base.float()  # (seeds, images)
    seeds, images = diff.shape
    g = torch.Generator().manual_seed(seed)
    estimates = []
    for start in range(0, resamples, 250):
        chunk = min(250, resamples - start)
        picks = torch.randint(0, images, (chunk, images), generator=g)
        weights = torch.zeros(chunk, images).scatter_add_(1, picks, torch.ones(chunk, images))
        per_seed = weights @ diff.T / images  # (chunk, seeds): each resample's difference per seed
        seed_picks = torch.randint(0, seeds, (chunk, seeds), generator=g)
        estimates.append(per_seed.gather(1, seed_picks).mean(dim=1))
    estimates = torch.cat(estimates)
    alpha = (1 - level) / 2
    return estimates.quantile(alpha).item(), estimates.quantile(1 - alpha).item()


@dataclass
class Comparison:
    diff: float  # mean accuracy difference (other - base) over matched seeds
    ci_low: float
    ci_high: float
    b: int  # discordant images summed over matched seeds: only the baseline right
    c: int  # only the other right
    p_value: float
    seeds: int  # number of matched seeds

    @property
    def verdict(self) -> str:
        significant = self.p_value < 0.05 and (self.ci_low > 0 or self.ci_high < 0)
        if not significant:
            return "no significant difference"
        return "better" if self.diff > 0 else "worse"


def compare(base: torch.Tensor, other: torch.Tensor) -> Comparison:
    """Paired comparison over matched seeds; McNemar on discordant counts pooled over seeds."""
    b, c = discordant(base, other)
    diff = (other.double().mean(dim=1) - base.double().mean(dim=1)).mean().item()
    low, high = bootstrap_diff_ci(base, other)
    return Comparison(diff, low, high, b, c, mcnemar_exact(b, c), len(base))
