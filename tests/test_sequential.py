"""The seeds design: power and seeds needed against direct computations and simulation, the sequential
p-value's calibration, the stage-by-stage decisions on hand-built inputs, and the whole procedure's error
control on simulated tables (the committed figures in results/stats/sequential.md included)."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as scipy_stats

from fmnist import stats
from fmnist.sequential import Comparison, SeedsDesign, boundary, decide
from fmnist.simulate import TableModel, churn_sd_points, simulate_null_studies, tally

ROOT = Path(__file__).resolve().parent.parent


# ----- power and seeds needed -----


def power_by_integration(n: int, diff: float, sd: float, level: float) -> float:
    """P(|T| > t) for T = (Z + shift) / U, U the sample SD over sd: integrated over U's distribution."""
    df = n - 1
    critical = scipy_stats.t.ppf(1 - level / 2, df)
    shift = diff * math.sqrt(n) / sd

    def given(u: float) -> float:
        density = scipy_stats.chi2.pdf(u * u * df, df) * 2 * u * df
        return density * (scipy_stats.norm.sf(critical * u - shift) + scipy_stats.norm.cdf(-critical * u - shift))

    return integrate.quad(given, 0, np.inf, limit=200)[0]


def tost_power_by_integration(n: int, sd: float, margin: float, level: float) -> float:
    df = n - 1
    critical = scipy_stats.t.ppf(1 - level, df)

    def given(u: float) -> float:
        density = scipy_stats.chi2.pdf(u * u * df, df) * 2 * u * df
        return density * max(0.0, 2 * scipy_stats.norm.cdf(margin * math.sqrt(n) / sd - critical * u) - 1)

    return integrate.quad(given, 0, np.inf, limit=200)[0]


@pytest.mark.parametrize("n,diff,sd,level", [(10, 0.5, 1.0, 0.05), (5, 1.77, 0.71, 0.0034), (34, -0.3, 0.9, 0.01), (3, 4.0, 0.4, 0.002)])
def test_paired_t_power_is_the_noncentral_t(n, diff, sd, level):
    assert stats.power_paired_t(np.array([n]), diff, sd, level)[0] == pytest.approx(power_by_integration(n, diff, sd, level), abs=1e-6)


def test_paired_t_power_matches_the_published_figure():
    # One-sample t, d = 0.5, two-sided alpha 0.05: power 0.2932 at n = 10, and n = 34 is the first to reach 80%.
    assert stats.power_paired_t(np.array([10]), 0.5, 1.0, 0.05)[0] == pytest.approx(0.2932, abs=1e-4)
    assert stats.seeds_for_power(lambda n: stats.power_paired_t(n, 0.5, 1.0, 0.05)) == 34


@pytest.mark.parametrize("n,sd,margin,level", [(5, 0.2, 0.3, 0.05), (12, 0.4, 0.3, 0.01), (30, 0.7, 0.3, 0.05)])
def test_tost_power_is_the_integral_over_the_sample_sd(n, sd, margin, level):
    assert stats.power_tost(np.array([n]), sd, margin, level)[0] == pytest.approx(tost_power_by_integration(n, sd, margin, level), abs=2e-3)


def test_seeds_for_power_is_the_first_n_that_reaches_it_or_none():
    power = lambda n: stats.power_paired_t(n, 1.0, 1.0, 0.05)  # noqa: E731
    n = stats.seeds_for_power(power)
    assert power(np.array([n]))[0] >= 0.8 > power(np.array([n - 1]))[0]
    assert stats.seeds_for_power(lambda n: stats.power_paired_t(n, 0.05, 1.0, 0.05)) is None  # beyond 50 seeds
    assert stats.seeds_for_power(lambda n: stats.power_paired_t(n, 1.0, 0.0, 0.05)) == stats.MIN_SEEDS  # no spread at all


def test_at_the_seeds_needed_a_simulation_has_about_80_percent_power():
    rng = np.random.default_rng(7)
    n = stats.seeds_for_power(lambda k: stats.power_paired_t(k, 0.6, 0.9, 0.01))
    diffs = 0.6 + 0.9 * rng.standard_normal((20_000, n))
    t = diffs.mean(1) / (diffs.std(1, ddof=1) / math.sqrt(n))
    simulated = np.mean(2 * scipy_stats.t.sf(np.abs(t), n - 1) < 0.01)
    assert 0.77 < simulated < 0.85, f"n={n}: simulated power {simulated:.3f}"
    n = stats.seeds_for_power(lambda k: stats.power_tost(k, 0.5, 0.3, 0.05))
    diffs = 0.5 * rng.standard_normal((20_000, n))
    se = diffs.std(1, ddof=1) / math.sqrt(n)
    shown = np.abs(diffs.mean(1)) < 0.3 - scipy_stats.t.ppf(0.95, n - 1) * se
    assert 0.77 < shown.mean() < 0.85, f"n={n}: simulated TOST power {shown.mean():.3f}"


# ----- the sequential p-value -----


def test_one_look_is_the_plain_p_value():
    single = boundary((7,))
    assert single.p_value([0.0123]) == 0.0123 and single.nominal(0.05, 0) == 0.05


def test_the_sequential_p_value_is_calibrated_on_fresh_null_sequences():
    looks = SeedsDesign(3, 2, 10).looks()
    b = boundary(looks)
    rng = np.random.default_rng(123)  # not the boundary's own draws
    q = []
    for x in rng.standard_normal((4000, looks[-1])):
        q.append(b.p_value([stats.paired_t(list(x[:n]), 0.3).p for n in looks]))
    q = np.array(q)
    for alpha in (0.01, 0.05, 0.2):
        assert abs(np.mean(q <= alpha) - alpha) < 3 * math.sqrt(alpha * (1 - alpha) / len(q)) + 0.002


def test_nominal_levels_grow_with_the_looks_and_agree_with_the_p_value():
    looks = SeedsDesign(3, 2, 10).looks()
    b = boundary(looks)
    nominal = [b.nominal(0.05, k) for k in range(len(looks))]
    assert nominal == sorted(nominal) and nominal[0] < 0.005 < 0.02 < nominal[-1] < 0.05
    for k, level in enumerate(nominal):
        ps = [1.0] * k + [level * 0.999]
        assert b.p_value(ps) <= 0.05 < b.p_value([1.0] * k + [level * 1.05])


# ----- decisions, stage by stage, on hand-built differences -----


def cell(name: str, diffs: list[float], identical: bool = False, reference: float | None = None) -> Comparison:
    return Comparison(name, diffs, [identical] * len(diffs), reference)


def test_a_clear_effect_is_decided_early_and_a_noisy_null_stops_for_futility():
    outcome = decide([cell("sgd", [-16.2, -16.9, -16.5, -16.8, -16.6]), cell("mse", [0.16, 1.06, -0.31, 0.4, -0.9])], SeedsDesign(), 0.3)
    sgd, mse = outcome.decisions["sgd"], outcome.decisions["mse"]
    assert (sgd.verdict, sgd.stage, sgd.n) == ("worse", 1, 3)
    assert (mse.verdict, mse.stage, mse.n) == ("futile", 1, 3)
    assert "more than max (10)" in mse.reason and mse.seeds_needed is None or mse.seeds_needed > 10
    assert outcome.next_seeds is None and outcome.stages_done == 1


def test_an_open_cell_waits_for_its_next_stage_and_the_report_says_how_many_seeds():
    diffs = [0.74, 0.58, 0.63]
    outcome = decide([cell("epochs10", diffs), cell("nll", [0.0] * 3, identical=True)], SeedsDesign(), 0.3)
    d = outcome.decisions["epochs10"]
    assert d.verdict == "open" and d.seeds_needed is not None and d.seeds_needed <= 10
    assert outcome.open_cells == ["epochs10"] and outcome.next_seeds == 5 and outcome.stages_done == 1
    assert "stage 2 runs it to 5 seeds (3 so far)" in d.reason
    assert outcome.decisions["nll"].verdict == "identical"
    # Its 4th seed alone does not complete stage 2; the 5th does.
    assert decide([cell("epochs10", diffs + [0.7])], SeedsDesign(), 0.3).stages_done == 1
    later = decide([cell("epochs10", diffs + [0.7, 0.66])], SeedsDesign(), 0.3)
    assert later.decisions["epochs10"].verdict == "better" and later.decisions["epochs10"].stage == 2


def test_a_stage_is_complete_only_when_every_running_cell_has_its_seeds():
    outcome = decide([cell("a", [1.0, 1.1, 0.9]), cell("combined", [])], SeedsDesign(), 0.3)
    assert outcome.stages_done == 0 and outcome.next_seeds == 3
    assert outcome.decisions["a"].verdict == "open"


def test_seeds_a_stopped_cell_did_not_need_are_not_used():
    # Decided at stage 1; seeds 4 and 5 (all zero) must not change its look.
    outcome = decide([cell("sgd", [-16.2, -16.9, -16.5, 0.0, 0.0])], SeedsDesign(), 0.3)
    assert outcome.decisions["sgd"].n == 3 and outcome.decisions["sgd"].verdict == "worse"


def test_max_reached_without_a_verdict_is_undecided():
    rng = np.random.default_rng(3)
    diffs = list(0.25 + 0.35 * rng.standard_normal(5))
    outcome = decide([cell("a", diffs)], SeedsDesign(3, 2, 5), 0.3)
    assert outcome.decisions["a"].verdict in ("undecided", "better", "equivalent", "futile")
    if outcome.decisions["a"].verdict == "undecided":
        assert outcome.decisions["a"].stage == 2 and "reached max (5 seeds)" in outcome.decisions["a"].reason


def test_without_a_design_it_is_the_plain_test_with_holm():
    a, b = [1.0, 1.2, 1.1, 0.9, 1.0], [0.3, -0.1, 0.4, 0.0, 0.2]
    outcome = decide([cell("a", a), cell("b", b), cell("c", [1.0, 2.0])], None, 0.3)
    p = [stats.paired_t(a, 0.3).p, stats.paired_t(b, 0.3).p]
    assert [outcome.decisions[n].q for n in "ab"] == pytest.approx(p)
    assert [outcome.decisions[n].q_holm for n in "ab"] == pytest.approx(stats.holm(p))
    assert outcome.decisions["a"].verdict == "better"
    assert outcome.decisions["c"].verdict == "too few seeds"
    lo, hi = outcome.decisions["a"].rci
    plain = stats.paired_t(a, 0.3)
    assert (lo, hi) == pytest.approx((plain.ci_low, plain.ci_high))


def test_the_repeated_interval_is_wider_than_the_plain_one_at_an_early_look():
    diffs = [0.5, 0.9, 0.7]
    d = decide([cell("a", diffs), cell("b", [5.0, 5.1, 4.9])], SeedsDesign(), 0.3).decisions["a"]
    plain = stats.paired_t(diffs, 0.3)
    assert d.rci[0] < plain.ci_low and d.rci[1] > plain.ci_high


# ----- simulation: the model, and the whole procedure -----


def test_the_fast_table_model_has_the_per_image_models_spread():
    per_image, _ = simulate_null_studies(300, 0.3, seeds=5)
    drawn = [TableModel((0.0,), 0.3, 5).draw(np.random.default_rng(i))[0] for i in range(2000)]
    sd_image = np.mean([np.std(d, ddof=1) for d in per_image])
    sd_fast = np.mean([np.std(d, ddof=1) for d in drawn])
    assert sd_fast == pytest.approx(sd_image, rel=0.12)
    assert math.sqrt(2) * churn_sd_points() == pytest.approx(0.27, abs=0.02)


def test_the_procedure_keeps_its_error_rates_on_a_few_hundred_tables():
    design = SeedsDesign()
    null = tally(TableModel((0.0,) * 7, 0.5), 200, design, 0.3, rng_seed=11)
    edge = tally(TableModel(tuple(0.3 * (-1) ** i for i in range(7)), 0.0), 200, design, 0.3, rng_seed=12)
    assert null.any_false_call <= 0.08 and edge.false_equivalent <= 0.05
    assert min(null.coverage, edge.coverage) >= 0.93
    assert null.seeds_per_cell < 6  # null cells stop early


@pytest.mark.slow
@pytest.mark.parametrize("sd", [0.0, 0.25, 0.5])
def test_the_procedure_keeps_its_error_rates_on_a_thousand_tables(sd):
    design = SeedsDesign()
    null = tally(TableModel((0.0,) * 7, sd), 1000, design, 0.3, rng_seed=21)
    edge = tally(TableModel(tuple(0.3 * (-1) ** i for i in range(7)), sd), 1000, design, 0.3, rng_seed=22)
    mixed = tally(TableModel((-1.0, -0.5, 0.0, 0.3, 0.5, 1.0, 2.0), sd), 1000, design, 0.3, rng_seed=23)
    assert null.any_false_call <= 0.06, f"family-wise false better/worse {null.any_false_call:.1%}"
    assert edge.false_equivalent <= 0.05, f"false equivalent {edge.false_equivalent:.1%}"
    assert min(null.coverage, edge.coverage, mixed.coverage) >= 0.95


@pytest.mark.slow
def test_the_design_spends_fewer_runs_than_a_fixed_design_of_equal_power():
    design = SeedsDesign()
    model = TableModel((1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0), 0.25, design.max)
    seq = tally(model, 500, design, 0.3, rng_seed=31)
    fixed = {n: tally(TableModel(model.effects, model.effect_sd, n), 500, None, 0.3, rng_seed=32) for n in range(3, 11)}
    equal = min(n for n, t in fixed.items() if t.power >= seq.power)
    assert seq.runs < fixed[equal].runs, f"sequential {seq.runs:.1f} runs at power {seq.power:.2f}; fixed n={equal}: {fixed[equal].runs}"


def test_the_committed_simulation_figures_keep_the_promises():
    text = (ROOT / "results/stats/sequential.md").read_text()
    assert "Made by `python scripts/sequential_simulation.py --tables 1000 --out results/stats/sequential.md`" in text
    rows = re.findall(r"^\| (\d\.\d) \| [\d.]+ \| ([\d.]+)% \| [\d.]+ \| ([\d.]+)% \| ([\d.]+)% \|$", text, re.M)
    assert [r[0] for r in rows] == ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5"]
    for sd, false_call, false_equivalent, coverage in rows:
        assert float(false_call) <= 6 and float(false_equivalent) <= 5 and float(coverage) >= 95, sd
    ratios = re.findall(r"\| ([\d.]+|—) \|$", text.split("## Seeds against")[1], re.M)
    assert len(ratios) == 9 and sum(float(r) < 1 for r in ratios if r != "—") >= 5
