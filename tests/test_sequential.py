"""The seeds design: power against direct computations and simulation, the null distributions and futility
bounds (size at Holm's smallest level, independence of the SD, beta spent at the effect), the stage-by-stage
decisions on hand-built inputs (the combined cell a stage late), the vectorized replay against the one-table
decisions, and the whole procedure against the fixed design on simulated tables (the committed figures in
results/stats/sequential.md included)."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as scipy_stats

from fmnist import sequential, stats
from fmnist.sequential import Comparison, Rule, SeedsDesign, decide, replay
from fmnist.simulate import TableModel, churn_sd_points, operate, operate_fixed

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


@pytest.mark.parametrize("n,diff,sd,level", [(10, 0.5, 1.0, 0.05), (5, 1.77, 0.71, 0.0034), (34, -0.3, 0.9, 0.01), (3, 4.0, 0.4, 0.002)])
def test_paired_t_power_is_the_noncentral_t(n, diff, sd, level):
    assert stats.power_paired_t(np.array([n]), diff, sd, level)[0] == pytest.approx(power_by_integration(n, diff, sd, level), abs=1e-6)


def test_paired_t_power_matches_the_published_figure():
    # One-sample t, d = 0.5, two-sided alpha 0.05: power 0.2932 at n = 10, and n = 34 is the first to reach 80%.
    assert stats.power_paired_t(np.array([10]), 0.5, 1.0, 0.05)[0] == pytest.approx(0.2932, abs=1e-4)
    assert stats.seeds_for_power(lambda n: stats.power_paired_t(n, 0.5, 1.0, 0.05)) == 34


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


# ----- null distributions and bounds -----

RULE = Rule(SeedsDesign(), 0.5, 0.3, 8)


def least_p(rule: Rule, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per path of t statistics at the rule's looks: the weighted minimum p over the looks it takes under the binding
    futility stops alone, and whether it stopped for futility."""
    w, bounds = sequential.weights(rule.looks), rule.bounds()
    least, alive = np.full(len(t), np.inf), np.ones(len(t), bool)
    for k, n in enumerate(rule.looks):
        least = np.where(alive, np.minimum(least, sequential._two_sided(t[:, k], n - 1) / w[k]), least)
        if k < len(rule.looks) - 1:
            alive &= np.abs(t[:, k]) >= bounds[k]
    return least, ~alive


def test_the_sequential_p_value_is_calibrated_on_fresh_null_sequences_with_the_futility_stops_in():
    t = np.concatenate(list(sequential._t_paths(RULE.looks, 0.0, 40_000, seed=123)))  # not the boundary's draws
    q = RULE.efficacy().p_value(least_p(RULE, t)[0])
    for alpha in (0.01, 0.05, 0.2):
        assert abs(np.mean(q <= alpha) - alpha) < 3 * math.sqrt(alpha * (1 - alpha) / len(q)) + 0.001, alpha


def test_with_no_effect_the_rule_does_the_same_whatever_the_sd():
    # The bounds are on the t scale: scaling every difference changes no look's t, stop, p-value or verdict.
    rule = Rule(SeedsDesign(), 0.5, 1e-9, 8)  # no equivalence (its margin is in points)
    diffs = np.random.default_rng(5).standard_normal((2000, 8, 11))
    runs = [replay(rule, scale * diffs, np.full(8, 11), np.zeros((2000, 8), int), np.zeros(8, int)) for scale in (0.2, 3.0)]
    assert np.array_equal(runs[0].verdict, runs[1].verdict) and np.array_equal(runs[0].n, runs[1].n)
    assert np.allclose(runs[0].q_holm, runs[1].q_holm)


@pytest.mark.slow
def test_the_size_at_holms_smallest_level_is_within_2_percent_of_nominal(monkeypatch):
    monkeypatch.setattr(sequential, "NULL_DRAWS", sequential.DRAWS)  # the draws every committed figure is made with
    level = 0.05 / 8
    cut = RULE.efficacy().quantile(level)
    below = total = 0
    for t in sequential._t_paths(RULE.looks, 0.0, 8_000_000, seed=777):  # fresh draws, not the boundary's
        below += int(np.sum(least_p(RULE, t)[0] <= cut))
        total += len(t)
    assert abs(below / total / level - 1) < 0.02, f"true size {below / total:.5f} for nominal {level}"


def test_the_futility_bounds_spend_about_beta_at_the_effect_where_the_design_can_show_it():
    bounds = RULE.bounds()
    assert list(bounds[:-1]) == sorted(bounds[:-1]) and bounds[-1] == 0
    powered = Rule(SeedsDesign(sd=0.3), 0.5, 0.3, 8)  # 0.5 points at SD 0.3: about 90% power within 11 seeds
    t = np.concatenate(list(sequential._t_paths(powered.looks, powered.theta, 40_000, seed=9)))  # a true change of `effect`
    stopped = least_p(powered, t)[1].mean()
    # beta-spending alone stops FUTILITY_BETA spent up to the last look but one (there is no stop at the last);
    # the conditional-power bound, where it is higher, a little more
    spent = sequential.FUTILITY_BETA * powered.looks[-2] / powered.looks[-1]
    assert spent - 0.01 < stopped < spent + 0.05, stopped
    # where the design cannot show the effect (0.5 at SD 0.5: under 50% power), it stops such cells more often
    t = np.concatenate(list(sequential._t_paths(RULE.looks, RULE.theta, 40_000, seed=9)))
    assert least_p(RULE, t)[1].mean() > stopped
    # at a conditional-power bound, the chance of showing the effect from there is the floor
    z = sequential.final_z(RULE.looks, RULE.cells)
    k = 3
    assert sequential.conditional_power(bounds[k], RULE.looks[k], RULE.looks, RULE.theta, z) == pytest.approx(sequential.CP_FLOOR, abs=0.02)


def test_null_distributions_are_kept_on_disk_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(sequential, "CACHE", tmp_path)
    monkeypatch.setattr(sequential, "NULL_DRAWS", 300_000)
    made = sequential._cached({"kind": "test"}, 300_000, lambda: sequential.NullDistribution.from_draws(np.random.default_rng(0).random(300_000)))
    again = sequential._cached({"kind": "test"}, 300_000, lambda: pytest.fail("computed twice"))
    assert np.array_equal(made.tail, again.tail) and again.draws == 300_000 and len(list(tmp_path.glob("*.npz"))) == 1
    assert made.p_value(0.5) == pytest.approx(0.5, abs=0.01) and made.p_value(np.inf) == 1.0


def test_nominal_levels_grow_with_the_looks_and_agree_with_the_p_value():
    nominal = [RULE.nominal(0.05, k) for k in range(len(RULE.looks))]
    assert nominal == sorted(nominal) and nominal[0] < 0.005 and 0.05 < nominal[-1] < 0.15  # binding futility stops give alpha back at the end
    null = RULE.efficacy()
    w = sequential.weights(RULE.looks)
    for k, level in enumerate(nominal):
        assert null.p_value(level * 0.999 / w[k]) <= 0.05 < null.p_value(level * 1.05 / w[k])


# ----- decisions, stage by stage, on hand-built differences -----


def cell(name: str, diffs: list[float], identical: bool = False, lag: int = 0) -> Comparison:
    return Comparison(name, diffs, [identical] * len(diffs), lag)


def test_a_clear_effect_is_decided_and_a_noisy_null_stops_for_futility_with_its_reason():
    outcome = decide([cell("sgd", [-16.2, -16.9, -16.5, -16.8, -16.6]), cell("mse", [0.16, 1.06, -0.31, 0.4, -0.9])], SeedsDesign(), 0.3)
    sgd, mse = outcome.decisions["sgd"], outcome.decisions["mse"]
    assert (sgd.verdict, sgd.n) == ("worse", 3)
    assert (mse.verdict, mse.stage, mse.n) == ("futile", 2, 5)
    assert "a true change of ±0.5 points would be shown with about" in mse.reason and mse.chance < sequential.CP_FLOOR
    assert outcome.next_looks == {} and outcome.stages_done == 2


def test_a_cell_that_looks_like_the_effect_worth_reporting_goes_on_and_one_near_zero_stops():
    others = [cell(f"big{i}", [5.0, 5.1, 4.9, 5.0, 5.05]) for i in range(6)]  # a study's family of 8
    like_it, near_zero = [0.9, 0.1, 0.6, 0.3, 0.5], [0.2, -0.3, 0.4, -0.1, 0.1]
    outcome = decide([cell("like", like_it), cell("zero", near_zero), *others], SeedsDesign(), 0.3, effect=0.5)
    assert outcome.decisions["like"].verdict in ("open", "better") and outcome.decisions["zero"].verdict == "futile"
    # a large effect of interest is easy to rule out: the same near-zero data stop at once
    assert decide([cell("zero", near_zero), *others], SeedsDesign(), 0.3, effect=2.0).decisions["zero"].stage == 1


def test_an_open_cell_waits_for_its_next_stage_and_says_how_many_seeds():
    diffs = [0.74, 0.58, 0.63]
    outcome = decide([cell("epochs10", diffs), cell("nll", [0.0] * 3, identical=True)], SeedsDesign(), 0.3)
    d = outcome.decisions["epochs10"]
    assert d.verdict == "open" and outcome.next_looks == {"epochs10": 5} and outcome.stages_done == 1
    assert "stage 2 runs it to 5 seeds (3 so far)" in d.reason
    assert outcome.decisions["nll"].verdict == "identical"
    assert decide([cell("epochs10", diffs + [0.7])], SeedsDesign(), 0.3).stages_done == 1  # the 4th seed alone is not stage 2
    later = decide([cell("epochs10", diffs + [0.7, 0.66, 0.71, 0.62])], SeedsDesign(), 0.3).decisions["epochs10"]
    assert later.verdict == "better" and later.stage in (2, 3)


def test_a_stage_is_complete_only_when_every_running_cell_has_its_seeds():
    outcome = decide([cell("a", [1.0, 1.1, 0.9]), cell("b", [])], SeedsDesign(), 0.3)
    assert outcome.stages_done == 0 and outcome.next_looks == {"a": 3, "b": 3}
    assert outcome.decisions["a"].verdict == "open"


def test_the_combined_cell_starts_a_stage_late_on_its_own_seeds():
    diffs = [0.9, 1.1, 1.0]
    waiting = decide([cell("a", diffs), cell("combined", [], lag=1)], SeedsDesign(), 0.3)
    assert waiting.stages_done == 1 and waiting.next_looks.get("combined") == 3 and "after the first stage's" in waiting.decisions["combined"].reason
    both = decide([cell("a", diffs + [1.0, 0.95]), cell("combined", [1.4, 1.5, 1.6], lag=1)], SeedsDesign(), 0.3)
    assert both.decisions["combined"].n == 3 and both.stages_done == 2
    unchosen = decide([cell("a", diffs), Comparison("combined", [], [], lag=1, planned=False)], SeedsDesign(), 0.3)
    assert unchosen.decisions["combined"].verdict == "not run" and "combined" not in unchosen.next_looks


def test_seeds_a_stopped_cell_did_not_need_are_not_used():
    outcome = decide([cell("a", [-16.2, -16.9, -16.5, -16.4, -16.6, 0.0, 0.0, 0.0, 0.0])], SeedsDesign(), 0.3)
    assert outcome.decisions["a"].verdict == "worse" and outcome.decisions["a"].n in (3, 5)


def test_max_reached_without_a_verdict_is_undecided():
    outcome = decide([cell("a", [0.6, -0.1, 0.9, 0.2, 0.5])], SeedsDesign(3, 2, 5, sd=5.0), 0.3, effect=0.2)
    assert outcome.decisions["a"].verdict == "undecided" and "reached max (5 seeds)" in outcome.decisions["a"].reason


def test_without_a_design_it_is_the_plain_test_with_holm():
    a, b = [1.0, 1.2, 1.1, 0.9, 1.0], [0.3, -0.1, 0.4, 0.0, 0.2]
    outcome = decide([cell("a", a), cell("b", b), cell("c", [1.0, 2.0])], None, 0.3)
    p = [stats.paired_t(a, 0.3).p, stats.paired_t(b, 0.3).p]
    assert [outcome.decisions[n].q for n in "ab"] == pytest.approx(p)
    assert [outcome.decisions[n].q_holm for n in "ab"] == pytest.approx(stats.holm(p))
    assert outcome.decisions["a"].verdict == "better" and outcome.decisions["c"].verdict == "too few seeds"
    plain = stats.paired_t(a, 0.3)
    assert outcome.decisions["a"].rci == pytest.approx((plain.ci_low, plain.ci_high))


def test_the_repeated_interval_is_wider_than_the_plain_one_at_an_early_look():
    diffs = [0.5, 0.9, 0.7]
    d = decide([cell("a", diffs), cell("b", [5.0, 5.1, 4.9])], SeedsDesign(), 0.3).decisions["a"]
    plain = stats.paired_t(diffs, 0.3)
    assert d.rci[0] < plain.ci_low and d.rci[1] > plain.ci_high


def test_the_replay_of_many_tables_gives_each_table_the_decisions_of_decide():
    model = TableModel((0.8, -0.4, 0.0, 1.5), (0.5, 0.4, 0.3, 0.6), lag=(0, 0, 0, 1))
    diffs = model.draw(np.random.default_rng(4), 30, 11)
    rule = Rule(SeedsDesign(), 0.5, 0.3, 4)
    done = replay(rule, diffs, np.full(4, 11), np.zeros((30, 4), int), np.array([0, 0, 0, 1]))
    for i in range(30):
        one = decide([cell(n, list(diffs[i, j]), lag=int(n == "combined")) for j, n in enumerate(["a", "b", "c", "combined"])], SeedsDesign(), 0.3)
        assert [d.verdict for d in one.decisions.values()] == [sequential.VERDICTS[v] for v in done.verdict[i]]
        assert [d.n for d in one.decisions.values()] == list(done.n[i])


# ----- simulation: the model, and the whole procedure against the fixed design -----


def test_the_table_model_draws_each_cells_mean_and_sd_and_shares_the_baseline():
    model = TableModel((0.5, -1.0), (0.3, 0.7))
    diffs = model.draw(np.random.default_rng(1), 4000, 10)
    assert diffs.mean(axis=(0, 2)) == pytest.approx([0.5, -1.0], abs=0.01)
    assert diffs.std(axis=(0, 2)) == pytest.approx([0.3, 0.7], rel=0.02)
    shared = np.corrcoef(diffs[:, 0].ravel(), diffs[:, 1].ravel())[0, 1]
    assert shared == pytest.approx(min(0.19, 0.3 / math.sqrt(2)) ** 2 / (0.3 * 0.7), abs=0.03)
    assert math.sqrt(2) * churn_sd_points() == pytest.approx(0.27, abs=0.02)


def test_on_a_few_hundred_tables_the_rule_keeps_its_errors_and_stops_null_cells_early():
    null = operate(RULE, TableModel((0.0,) * 8, (0.5,) * 8), 300, rng_seed=11)
    edge = operate(RULE, TableModel(tuple(0.3 * (-1) ** i for i in range(8)), (0.3,) * 8), 300, rng_seed=12)
    assert null.false_call <= 0.09 and edge.false_equivalent <= 0.05 and min(null.coverage, edge.coverage) >= 0.95
    assert null.seeds.mean() < 6.5


@pytest.mark.slow
def test_the_targets_hold_on_a_smaller_simulation(monkeypatch):
    """Power within 3 points of 10 seeds of every cell, runs at most 0.65x of it (0.6x with no effect), false verdicts <= 5%."""
    monkeypatch.setattr(sequential, "NULL_DRAWS", sequential.DRAWS)
    none = (0.0,) * 6
    for effects, sd in (((0.5, 0.5) + none, 0.3), ((1.0, 1.0) + none, 0.7)):
        model, rule = TableModel(effects, (sd,) * 8), Rule(SeedsDesign(sd=sd), effects[0], 0.3, 8)
        seq, fixed = operate(rule, model, 1500, rng_seed=41), operate_fixed(model, 10, 1500, 0.3, rng_seed=41)
        worth = np.abs(np.array(effects)) >= effects[0]
        assert seq.power_over(worth) >= fixed.power_over(worth) - 0.03, (effects, seq.power_over(worth), fixed.power_over(worth))
        assert seq.runs <= 0.65 * fixed.runs, (effects, seq.runs, fixed.runs)
    for sd, effect in ((0.3, 0.5), (0.7, 1.0)):
        model = TableModel((0.0,) * 8, (sd,) * 8)
        seq, fixed = operate(Rule(SeedsDesign(sd=sd), effect, 0.3, 8), model, 6000, rng_seed=43), operate_fixed(model, 10, 10, 0.3)
        assert seq.false_call <= 0.055 and seq.runs <= 0.6 * fixed.runs, (sd, seq.false_call, seq.runs)


def test_the_committed_simulation_figures_keep_their_promises():
    text = (ROOT / "results/stats/sequential.md").read_text()
    assert "Made by `python scripts/sequential_simulation.py --tables 2000 --out results/stats/sequential.md`" in text
    rows = re.findall(r"^\| (2 of 8 cells at \+[\d.]+, SD [\d.]+|table2, \w+: its cells as measured) \| [^|]+ \| \d+ \| ([\d.]+)% \| "
                      r"([\d.]+)% \| ([+-][\d.]+) \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|", text, re.M)
    assert len(rows) == 5  # the two planned scenarios and each committed model's cells as measured
    for name, _, _, gap, ratio in rows:
        assert float(gap) >= -3.0 and float(ratio) <= 0.65, name
    nulls = re.findall(r"^\| no effect, SD [\d.]+ \| ([\d.]+)% \[[\d.]+%, ([\d.]+)%\] \| [\d.]+% \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|", text, re.M)
    assert len(nulls) == 2
    for false, high, ratio in nulls:
        assert float(false) <= 5.0 and float(high) < 6.0 and float(ratio) <= 0.6
    coverage = re.findall(r"^\| [\d.]+ \| ([\d.]+)% \| ([\d.]+)% \|$", text, re.M)
    assert len(coverage) == 4 and all(float(e) <= 5 and float(c) >= 95 for e, c in coverage)
