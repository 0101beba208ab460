"""Seeds where they decide: a study's seeds design and the rule that stops each cell.

A study may declare `seeds: {first: 3, step: 2, max: 10}`. Stage 1 runs `first` seeds of every cell
(the combined cell included, once validation has chosen it); after each stage a cell with a verdict
gets no more seeds, a cell that would need more than `max` seeds stops for futility, and the next
stage runs `step` more seeds of the cells still open, up to `max`. Without a design the study is
one fixed look at the seeds at hand.

The rule, whose error control `scripts/sequential_simulation.py` measures (results/stats/):

- A comparison's looks are its first n_1 < n_2 < ... paired seeds (in seed order). At look k a
  paired t-test gives p_k. Its *sequential p-value* is the probability, with no effect, that the
  design's weighted minimum min_k p_k / w_k would fall as low as observed, with w_k = (n_k / n_max)^2:
  the first looks, whose few degrees of freedom decide only huge effects, spend little alpha. With
  normal per-seed differences the t statistics of all looks have one joint distribution whatever
  their SD, so that null distribution is drawn once per design (a fixed random seed).
- Holm's step-down over the table's comparisons on those sequential p-values: a closed test whose
  intersections are weighted Bonferroni tests of group-sequential tests, so a rejected cell's alpha
  passes to the others at every stage (Holm's reallocation), with family-wise error control.
- Equivalence the same way, from TOST's p at each look and the one-sided null.
- Repeated confidence intervals: at look k, the t interval at nominal level 1 - c w_k, where c is
  the boundary at alpha; every look's interval covers the true difference at once with >= 95%.

Plain numbers in and out: no torch, no Hydra, no MLflow.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from fmnist import stats
from fmnist.errors import require

ALPHA = stats.ALPHA
POWER = 0.8  # the power seeds_needed aims at
MOST_SEEDS = 50  # seeds_needed above this is "more than 50"
NULL_DRAWS = 200_000  # simulated null sequences per design
NULL_SEED = 20261201


@dataclass
class SeedsDesign:
    """How a study adds seeds: `first` in stage 1, then `step` more per stage for open cells, up to `max`."""

    first: int = 3
    step: int = 2
    max: int = 10

    def __post_init__(self):
        require(self.first >= stats.MIN_SEEDS, f"study.seeds.first must be >= {stats.MIN_SEEDS} (a t-test needs them), got {self.first}")
        require(self.step >= 1, f"study.seeds.step must be >= 1, got {self.step}")
        require(self.max >= self.first, f"study.seeds.max must be >= study.seeds.first ({self.first}), got {self.max}")
        require(self.max <= MOST_SEEDS, f"study.seeds.max must be <= {MOST_SEEDS}, got {self.max}")

    def looks(self) -> tuple[int, ...]:
        """Paired seeds at each stage's end: first, first + step, ..., max."""
        return tuple(sorted({*range(self.first, self.max, self.step), self.max}))

    def stage_of(self, index: int) -> int:
        """The stage that runs a cell's seed number `index` (0-based, in seed order)."""
        return next(k for k, n in enumerate(self.looks(), 1) if index < n) if index < self.max else len(self.looks())

    def describe(self) -> str:
        return f"first {self.first}, step {self.step}, max {self.max}"


class Boundary:
    """The null distribution of one design's weighted minimum p over its looks (two- or one-sided)."""

    def __init__(self, looks: tuple[int, ...], two_sided: bool, draws: int = NULL_DRAWS):
        self.looks = looks
        self.weights = np.array([(n / looks[-1]) ** 2 for n in looks])
        if len(looks) == 1:
            self.null = None  # one look: the p-value itself, uniform with no effect
            return
        x = np.random.default_rng(NULL_SEED).standard_normal((draws, looks[-1]))
        sums, squares = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
        weighted = np.full(draws, np.inf)
        for n, w in zip(looks, self.weights):
            mean = sums[:, n - 1] / n
            sd = np.sqrt(np.maximum(squares[:, n - 1] - n * mean**2, 0) / (n - 1))
            t = mean / (sd / math.sqrt(n))
            p = 2 * scipy_stats.t.sf(np.abs(t), n - 1) if two_sided else scipy_stats.t.sf(t, n - 1)
            weighted = np.minimum(weighted, p / w)
        self.null = np.sort(weighted)

    def p_value(self, p_by_look: list[float]) -> float:
        """The sequential p-value of the p's seen at the first len(p_by_look) looks (never below the plain p at one look)."""
        observed = min(p / w for p, w in zip(p_by_look, self.weights))
        if self.null is None:
            return float(observed)
        below = np.searchsorted(self.null, observed, side="right")
        return float((below + 1) / (len(self.null) + 1))

    def nominal(self, alpha: float, look: int) -> float:
        """The plain p a look (0-based) must reach for the sequential p-value to be <= alpha."""
        if self.null is None:
            return alpha
        allowed = math.floor(alpha * (len(self.null) + 1)) - 1  # null draws at or below the observed value
        threshold = self.null[allowed] if allowed >= 0 else 0.0
        return float(threshold * self.weights[look])


@functools.cache
def boundary(looks: tuple[int, ...], two_sided: bool = True) -> Boundary:
    return Boundary(looks, two_sided)


# ----- one comparison, one family, stage by stage -----


@dataclass
class Comparison:
    """A cell against its reference (usually the baseline), per paired seed in seed order."""

    name: str
    diffs: list[float]  # points
    identical: list[bool]  # same prediction on every test image for that seed
    reference: float | None = None  # the study's published difference, points


@dataclass
class Decision:
    """What the rule says of one comparison after the stages its data complete."""

    verdict: str  # better, worse, equivalent, identical, futile, undecided, inconclusive, open, too few seeds
    stage: int | None = None  # the stage that decided or stopped it
    n: int = 0  # paired seeds at its last look
    q: float | None = None  # sequential p-value (with one look: the plain p)
    q_holm: float | None = None
    q_tost: float | None = None  # the same for equivalence within the margin
    q_tost_holm: float | None = None
    rci: tuple[float, float] | None = None  # 95% repeated confidence interval at its last look
    seeds_needed: int | None = None  # paired seeds for an 80%-power decision either way; None: more than MOST_SEEDS
    seeds_needed_detect: int | None = None  # ... to show the observed difference
    seeds_needed_reference: int | None = None  # ... to show the study's published difference
    seeds_needed_equivalent: int | None = None  # ... to show equivalence were the true difference zero
    reason: str = ""  # why it stopped, or what it waits for


DECIDED = ("better", "worse", "equivalent", "identical")


@dataclass
class Outcome:
    """The family after the stages the data complete: a decision per comparison and what comes next."""

    decisions: dict[str, Decision]
    design: SeedsDesign | None
    stages_done: int  # complete stages (a fixed design: 1 once every cell has its seeds)
    next_seeds: int | None  # paired seeds the open cells need by the end of the next stage; None: nothing to run

    @property
    def open_cells(self) -> list[str]:
        return [name for name, d in self.decisions.items() if d.verdict == "open"]


def rci(diffs: list[float], nominal: float) -> tuple[float, float]:
    """The t interval at level 1 - nominal: a look's repeated confidence interval."""
    n = len(diffs)
    mean, sd = stats.mean_std(diffs)
    half = scipy_stats.t.ppf(1 - nominal / 2, n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


def _least(*counts: int | None) -> int | None:
    found = [x for x in counts if x is not None]
    return min(found) if found else None


class _Family:
    """The comparisons of one table, looked at stage by stage."""

    def __init__(self, comparisons: list[Comparison], looks_of: dict[str, tuple[int, ...]], margin: float, alpha: float):
        self.by_name = {c.name: c for c in comparisons}
        self.looks_of, self.margin, self.alpha = looks_of, margin, alpha
        self.decisions = {c.name: Decision("open") for c in comparisons}
        self.p_seen: dict[str, list[float]] = {c.name: [] for c in comparisons}
        self.tost_seen: dict[str, list[float]] = {c.name: [] for c in comparisons}

    def look(self, name: str, n: int, stage: int) -> None:
        """Cell `name` takes its look at its first n paired seeds."""
        paired = stats.paired_t(self.by_name[name].diffs[:n], self.margin)
        self.p_seen[name].append(paired.p)
        self.tost_seen[name].append(paired.p_tost)
        d = self.decisions[name]
        d.n = n
        if all(self.by_name[name].identical[:n]):
            d.verdict, d.stage, d.reason = "identical", stage, "the same prediction on every test image for every seed"

    def test(self, stage: int) -> None:
        """Holm over the family on the sequential p-values; a verdict once given stays."""
        names = [n for n in self.decisions if self.p_seen[n]]
        q = [boundary(self.looks_of[n], True).p_value(self.p_seen[n]) for n in names]
        q_tost = [boundary(self.looks_of[n], False).p_value(self.tost_seen[n]) for n in names]
        for name, qi, qh, qt, qth in zip(names, q, stats.holm(q), q_tost, stats.holm(q_tost)):
            d = self.decisions[name]
            d.q, d.q_holm, d.q_tost, d.q_tost_holm = qi, qh, qt, qth
            if d.verdict in DECIDED:
                continue
            if qth < self.alpha:
                d.verdict, d.stage, d.reason = "equivalent", stage, f"within ±{self.margin:g} points"
            elif qh < self.alpha:
                mean = sum(self.by_name[name].diffs[: d.n]) / d.n
                d.verdict, d.stage, d.reason = ("better" if mean > 0 else "worse"), stage, ""

    def seeds_needed(self, name: str) -> None:
        """Paired seeds at which the design's last look would have 80% power, at the level this cell now faces."""
        d, c = self.decisions[name], self.by_name[name]
        looks = self.looks_of[name]
        mean, sd = stats.mean_std(c.diffs[: d.n])
        m = len(self.decisions)
        rejected = sum(x.verdict in ("better", "worse") for x in self.decisions.values())
        shown = sum(x.verdict == "equivalent" for x in self.decisions.values())
        detect = boundary(looks, True).nominal(self.alpha / max(1, m - rejected), len(looks) - 1)
        equivalent = boundary(looks, False).nominal(self.alpha / max(1, m - shown), len(looks) - 1)
        d.seeds_needed_detect = stats.seeds_for_power(lambda n: stats.power_paired_t(n, mean, sd, detect)) if mean else None
        d.seeds_needed_reference = stats.seeds_for_power(lambda n: stats.power_paired_t(n, c.reference, sd, detect)) if c.reference else None
        d.seeds_needed_equivalent = stats.seeds_for_power(lambda n: stats.power_tost(n, sd, self.margin, equivalent))
        d.seeds_needed = _least(d.seeds_needed_detect, d.seeds_needed_equivalent)

    def intervals(self) -> None:
        for name, d in self.decisions.items():
            if self.p_seen[name]:
                looks = self.looks_of[name]
                d.rci = rci(self.by_name[name].diffs[: d.n], boundary(looks, True).nominal(self.alpha, len(self.p_seen[name]) - 1))


def decide(comparisons: list[Comparison], design: SeedsDesign | None, margin: float, alpha: float = ALPHA,
           stopping: bool = True) -> Outcome:
    """Replay the design stage by stage on the data at hand; a fixed design is one look at every seed.

    `stopping=False` (secondary comparisons): each comparison takes every look its seeds reach, and only
    a verdict (or none: inconclusive) comes out; nothing is futile or open.
    """
    if design is None:
        return _fixed(comparisons, margin, alpha)
    if not stopping:
        return _read_only(comparisons, design, margin, alpha)
    looks = design.looks()
    family = _Family(comparisons, {c.name: looks for c in comparisons}, margin, alpha)
    running = [c.name for c in comparisons]  # cells still getting seeds
    done = 0
    for k, n in enumerate(looks):
        if not running or any(len(family.by_name[name].diffs) < n for name in running):
            break  # this stage is not complete yet (or nothing is left to run)
        done = k + 1
        for name in running:
            family.look(name, n, done)
        family.test(done)
        for name in list(running):
            d = family.decisions[name]
            if d.verdict in DECIDED:
                running.remove(name)
                continue
            family.seeds_needed(name)
            if n == looks[-1]:
                d.verdict, d.stage, d.reason = "undecided", done, f"reached max ({design.max} seeds) without a verdict"
                running.remove(name)
            elif d.seeds_needed is None or d.seeds_needed > design.max:
                count = d.seeds_needed or f"more than {MOST_SEEDS}"
                d.verdict, d.stage = "futile", done
                d.reason = f"80% power either way needs {count} seeds, more than max ({design.max})"
                running.remove(name)
    for name in running:  # the same predictions as the baseline is a fact, not a test: shown before its stage ends
        c = family.by_name[name]
        if family.decisions[name].verdict == "open" and len(c.diffs) >= looks[done if done < len(looks) else -1] and all(c.identical):
            family.look(name, len(c.diffs), done + 1)
    family.intervals()
    next_seeds = None
    if running and done < len(looks):
        next_seeds = looks[done]
        for name in running:
            if family.decisions[name].verdict == "open":
                have = len(family.by_name[name].diffs)
                family.decisions[name].reason = f"stage {done + 1} runs it to {next_seeds} seeds ({have} so far)"
    return Outcome(family.decisions, design, done, next_seeds)


def _fixed(comparisons: list[Comparison], margin: float, alpha: float) -> Outcome:
    """One look per cell at all its paired seeds: plain p, Holm, no stopping."""
    tested = [c for c in comparisons if len(c.diffs) >= stats.MIN_SEEDS]
    family = _Family(tested, {c.name: (len(c.diffs),) for c in tested}, margin, alpha)
    for c in tested:
        family.look(c.name, len(c.diffs), 1)
    family.test(1)
    for name, d in family.decisions.items():
        if d.verdict not in DECIDED:
            family.seeds_needed(name)
            d.verdict, d.reason = "inconclusive", ""
    family.intervals()
    decisions = {}
    for c in comparisons:
        if c.name in family.decisions:
            decisions[c.name] = family.decisions[c.name]
        elif c.diffs and all(c.identical):
            decisions[c.name] = Decision("identical", n=len(c.diffs), reason="the same prediction on every test image for every seed")
        else:
            decisions[c.name] = Decision("too few seeds", n=len(c.diffs), reason=f"fewer than {stats.MIN_SEEDS} paired seeds")
    return Outcome(decisions, None, 1, None)


def _read_only(comparisons: list[Comparison], design: SeedsDesign, margin: float, alpha: float) -> Outcome:
    looks = design.looks()
    family = _Family(comparisons, {c.name: looks for c in comparisons}, margin, alpha)
    for k, n in enumerate(looks):
        due = [c.name for c in comparisons if len(c.diffs) >= n and family.decisions[c.name].verdict == "open"]
        if not due:
            break
        for name in due:
            family.look(name, n, k + 1)
        family.test(k + 1)
    for d in family.decisions.values():
        if d.verdict not in DECIDED:
            d.verdict, d.stage = ("inconclusive", None) if d.n else ("too few seeds", None)
    family.intervals()
    return Outcome(family.decisions, design, 0, None)
