"""Seed-level statistics: each formula on inputs worked by hand, and a simulation of null studies."""

import math

import numpy as np
import pytest
import torch

from fmnist.simulate import simulate_null_studies
from fmnist.stats import discordant, holm, mcnemar_exact, mean_std, paired_t


def test_mcnemar_exact_worked_by_hand():
    # b=1, c=5: n=6, P(X<=1) = (C(6,0) + C(6,1)) / 2^6 = 7/64, two-sided p = 14/64.
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(5, 1) == pytest.approx(14 / 64)
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(7, 7) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(400, 500) < 0.001 < 0.3 < mcnemar_exact(480, 500)


def test_discordant_counts_who_got_what_right():
    base = torch.tensor([True, True, False, False, True])
    other = torch.tensor([True, False, True, True, True])
    assert discordant(base, other) == (1, 2)


def test_mean_std_uses_the_sample_std():
    mean, std = mean_std([0.90, 0.92, 0.94])
    assert mean == pytest.approx(0.92) and std == pytest.approx(0.02)
    assert math.isnan(mean_std([0.9])[1])


def test_paired_t_on_differences_worked_by_hand():
    # d = 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t = 2*sqrt(3) = 3.4641 on 2 df.
    # Two-sided p for t on 2 df: 1 - t/sqrt(t^2 + 2) = 1 - 3.4641/3.7417 = 0.07418.
    # 95% CI: 2 +- 4.3027 / sqrt(3) = 2 +- 2.4841.
    result = paired_t([1.0, 2.0, 3.0], margin=0.5)
    assert result.diff == pytest.approx(2.0) and result.sd == pytest.approx(1.0)
    assert result.p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), rel=1e-6)
    assert result.ci_low == pytest.approx(2 - 4.302653 / math.sqrt(3), rel=1e-6)
    assert result.ci_high == pytest.approx(2 + 4.302653 / math.sqrt(3), rel=1e-6)


def test_tost_is_the_larger_one_sided_p_against_each_margin():
    # d = 0.1, -0.1, 0.0: mean 0, sd 0.1, se 0.0577. Against +-0.3: t = 0.3/0.0577 = 5.196 on 2 df,
    # one-sided p = (1 - t/sqrt(t^2 + 2)) / 2 = 0.01754 on both sides.
    result = paired_t([0.1, -0.1, 0.0], margin=0.3)
    t = 0.3 / (0.1 / math.sqrt(3))
    assert result.p_tost == pytest.approx((1 - t / math.sqrt(t * t + 2)) / 2, rel=1e-6)
    assert paired_t([0.1, -0.1, 0.0], margin=0.05).p_tost > 0.2  # a margin smaller than the noise: not shown
    # Shifted towards +margin, the upper test decides.
    assert paired_t([0.25, 0.2, 0.3], margin=0.3).p_tost > paired_t([0.05, 0.0, 0.1], margin=0.3).p_tost


def test_paired_t_with_no_spread():
    same = paired_t([0.0, 0.0, 0.0], margin=0.3)
    assert (same.p, same.p_tost, same.ci_low, same.ci_high) == (1.0, 0.0, 0.0, 0.0)
    shifted = paired_t([1.0, 1.0, 1.0], margin=0.3)
    assert (shifted.p, shifted.p_tost) == (0.0, 1.0)
    with pytest.raises(ValueError):
        paired_t([1.0], margin=0.3)


def test_holm_worked_by_hand():
    # sorted 0.01, 0.02, 0.04 -> 3*0.01, 2*0.02, max(1*0.04, 0.04): 0.03, 0.04, 0.04; order kept.
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1 and monotone
    assert holm([]).tolist() == []
    assert holm([0.003]).tolist() == [0.003]
    table = holm([[0.04, 0.01], [0.5, 0.001]])  # row by row
    assert table[0] == pytest.approx([0.04, 0.02]) and table[1] == pytest.approx([0.5, 0.002])


# ----- the simulation: null studies with seed-level variation of the effect -----


@pytest.mark.parametrize("seed_sd,mcnemar_at_least", [(0.22, 0.10), (0.47, 0.25)])
def test_null_studies_give_few_false_verdicts_at_the_seed_level(seed_sd, mcnemar_at_least):
    diffs, pooled = simulate_null_studies(1000, seed_sd)
    false_t = np.mean([paired_t(list(d), 0.3).p < 0.05 for d in diffs])
    false_mcnemar = np.mean([p < 0.05 for p in pooled])
    assert false_t <= 0.06, f"paired t over seeds: {false_t:.1%} false verdicts"
    # The same studies fool the pooled McNemar test, which takes seed noise for a difference:
    # the simulation does carry the variation that matters.
    assert false_mcnemar >= mcnemar_at_least, f"pooled McNemar: {false_mcnemar:.1%}"
