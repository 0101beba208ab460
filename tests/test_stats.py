import math

import pytest
import torch

from fmnist.stats import bootstrap_diff_ci, compare, discordant, mcnemar_exact, mean_std


def test_mcnemar_exact_worked_by_hand():
    # b=1, c=5: n=6, P(X<=1) = (C(6,0) + C(6,1)) / 2^6 = 7/64, two-sided p = 14/64.
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(5, 1) == pytest.approx(14 / 64)
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(7, 7) == 1.0 and mcnemar_exact(0, 0) == 1.0
    # Large counts stay exact (no overflow): 400 vs 500 is clearly significant, 480 vs 500 is not.
    assert mcnemar_exact(400, 500) < 0.001 < 0.3 < mcnemar_exact(480, 500)


def test_discordant_counts_who_got_what_right():
    base = torch.tensor([True, True, False, False, True])
    other = torch.tensor([True, False, True, True, True])
    assert discordant(base, other) == (1, 2)


def test_mean_std_uses_the_sample_std():
    mean, std = mean_std([0.90, 0.92, 0.94])
    assert mean == pytest.approx(0.92) and std == pytest.approx(0.02)
    assert math.isnan(mean_std([0.9])[1])


def fixed_pair(n=10_000, only_other=300, only_base=100):
    base = torch.zeros(n, dtype=torch.bool)
    base[: n // 2] = True
    other = base.clone()
    other[n // 2 : n // 2 + only_other] = True
    other[:only_base] = False
    return base, other


def test_bootstrap_ci_on_a_fixed_sample_matches_the_normal_approximation():
    base, other = fixed_pair()
    low, high = bootstrap_diff_ci(base[None], other[None], resamples=4000)
    # d = +1 on 300 images, -1 on 100: mean 0.02, sd sqrt(0.04 - 0.02^2), SE = sd / sqrt(10000).
    se = math.sqrt(0.04 - 0.02**2) / 100
    assert low == pytest.approx(0.02 - 1.96 * se, abs=0.0006)
    assert high == pytest.approx(0.02 + 1.96 * se, abs=0.0006)
    assert (low, high) == bootstrap_diff_ci(base[None], other[None], resamples=4000)  # fixed seed


def test_seed_disagreement_widens_the_interval():
    base, other = fixed_pair()
    _, worse = fixed_pair(only_other=100, only_base=300)
    one_seed = bootstrap_diff_ci(base[None], other[None])
    two_seeds = bootstrap_diff_ci(torch.stack([base, base]), torch.stack([other, worse]))
    assert two_seeds[1] - two_seeds[0] > 3 * (one_seed[1] - one_seed[0])


def test_compare_pools_discordant_images_over_seeds_and_gives_a_verdict():
    base, other = fixed_pair()
    result = compare(torch.stack([base, base]), torch.stack([other, other]))
    assert (result.b, result.c, result.seeds) == (200, 600, 2)
    assert result.diff == pytest.approx(0.02) and result.verdict == "better"
    assert compare(other[None], base[None]).verdict == "worse"
    _, close = fixed_pair(only_other=105, only_base=100)
    assert compare(base[None], close[None]).verdict == "no significant difference"
