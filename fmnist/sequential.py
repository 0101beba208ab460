"""Seeds where they decide: a study's seeds design and the rule that stops each cell.

A study states the smallest difference worth reporting, `effect` (accuracy points), and how seeds are
added: `seeds: {first: 3, step: 2, max: 11, sd: 0.5}`, `sd` being the SD of per-seed differences it
plans for. Stage 1 runs `first` seeds of every cell; after each stage a cell with a verdict, or one the
rule stops for futility, gets no more seeds and the others get `step` more, up to `max`. The combined
cell, chosen on validation at stage 1, is tested on the seeds after the first stage's: it starts a stage
later, and the seeds that chose it play no part in its test. Without a design the study is one fixed
look at the seeds at hand.

The rule (its error control and power are measured in results/stats/sequential.md):

- A cell's looks are its first n_1 < n_2 < ... paired seeds; at look k a paired t-test gives t_k, p_k.
- Futility, binding: at every look but the last a cell stops when |t_k| is below a bound planned for a
  true change of `effect` at the planning SD, the larger of (a) a beta-spending bound: a true change of
  `effect` is stopped this way with chance FUTILITY_BETA over the design, spent in proportion to seeds,
  and (b) from the second look, the t below which such a change would be shown by the last look with
  chance (conditional power) under CP_FLOOR. The bounds are numbers on the t scale: with no effect,
  what the rule does has one distribution whatever the true SD, so the efficacy p-values below are
  computed with these stops in. The software always obeys them (a stopped cell gets no seeds, and
  seeds run by hand after the stop are not read).
- Efficacy: a cell's sequential p-value is the chance, with no effect and the futility stops as they
  fall, that its weighted minimum p, min_k p_k / w_k with w_k = (n_k / n_max)^3, would be as low as
  observed; early looks, with few degrees of freedom, spend little. Holm's step-down over the table's
  cells on those p-values at every stage (a closed test of weighted Bonferroni tests: a rejected cell's
  share passes to the others).
- Equivalence within the margin: TOST's p at each look, the same way (without the futility stops in,
  which is conservative), Holm over the table.
- Repeated 95% confidence intervals: at look k the t interval at nominal 1 - c w_k, c from the null
  without futility stops, so the intervals hold the true difference at every look at once however a
  cell stops.

The null distributions are drawn once per design (NULL_DRAWS pivotal t-sequences, a fixed seed) and kept
on disk. `replay` runs the rule on arrays of many tables at once (simulations); `decide` on one table.
Plain numbers in and out: no torch, no Hydra, no MLflow.
"""

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import special
from scipy import stats as scipy_stats

from fmnist import stats
from fmnist.errors import require

ALPHA = stats.ALPHA
POWER = 0.8  # the power seeds_needed aims at
MOST_SEEDS = 50  # a fixed design's seeds_needed above this is "more than 50"
WEIGHT_POWER = 3  # a look's efficacy weight (n_k / n_max)^3
FUTILITY_BETA = 0.10  # chance, at a true change of `effect` and the planning SD, of a futility stop over the design
CP_FLOOR = 0.55  # from the second look: stop when conditional power at `effect` falls below this
# Pivotal t-sequences behind each null distribution (the size at alpha/8 is checked in tests). FMNIST_NULL_DRAWS lowers it
# for tests that check logic, not precision; every committed figure is made with the default.
DRAWS = 8_000_000
NULL_DRAWS = int(os.environ.get("FMNIST_NULL_DRAWS", DRAWS))
PLAN_DRAWS = 1_000_000  # sequences under the effect behind the beta-spending bound
NULL_SEED, PLAN_SEED = 20261201, 20261205
CHUNK = 250_000
VERSION = 2  # of the null distributions on disk: bump when their computation changes
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fmnist" / "boundaries"


@dataclass  # not frozen: OmegaConf fills it from the study file
class SeedsDesign:
    """How a study adds seeds: `first` in stage 1, then `step` more per stage for open cells, up to `max`;
    `sd` is the SD of per-seed differences (points) the futility bounds are planned for."""

    first: int = 3
    step: int = 2
    max: int = 11
    sd: float = 0.5

    def __post_init__(self):
        require(self.first >= stats.MIN_SEEDS, f"study.seeds.first must be >= {stats.MIN_SEEDS} (a t-test needs them), got {self.first}")
        require(self.step >= 1, f"study.seeds.step must be >= 1, got {self.step}")
        require(self.max >= self.first, f"study.seeds.max must be >= study.seeds.first ({self.first}), got {self.max}")
        require(self.max <= MOST_SEEDS, f"study.seeds.max must be <= {MOST_SEEDS}, got {self.max}")
        require(self.sd > 0 and math.isfinite(self.sd), f"study.seeds.sd (the planned SD of per-seed differences) must be > 0 points, got {self.sd}")

    def looks(self) -> tuple[int, ...]:
        """Paired seeds at each stage's end: first, first + step, ..., max."""
        return tuple(sorted({*range(self.first, self.max, self.step), self.max}))

    def stage_of(self, index: int) -> int:
        """The stage that runs a cell's seed number `index` (0-based, in seed order)."""
        return next(k for k, n in enumerate(self.looks(), 1) if index < n) if index < self.max else len(self.looks())

    def describe(self) -> str:
        return f"first {self.first}, step {self.step}, max {self.max}, planned SD {self.sd:g}"


# ----- null distributions and bounds, once per design -----


def weights(looks: tuple[int, ...]) -> np.ndarray:
    return np.array([(n / looks[-1]) ** WEIGHT_POWER for n in looks])


def _t_paths(looks: tuple[int, ...], drift: float, draws: int, seed: int):
    """Chunks of (paths, looks) t statistics of i.i.d. normal differences with mean `drift` and SD 1."""
    rng = np.random.default_rng(seed)
    for start in range(0, draws, CHUNK):
        x = drift + rng.standard_normal((min(CHUNK, draws - start), looks[-1]))
        sums, squares = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
        t = np.empty((len(x), len(looks)))
        for k, n in enumerate(looks):
            mean = sums[:, n - 1] / n
            sd = np.sqrt(np.maximum(squares[:, n - 1] - n * mean**2, 0) / (n - 1))
            t[:, k] = mean / (sd / math.sqrt(n))
        yield t


def _two_sided(t, df):
    return 2 * special.stdtr(df, -np.abs(t))


class NullDistribution:
    """The null distribution of a weighted minimum p: its sorted lowest 2% exactly, every 50th draw above."""

    TAIL, THIN = 0.02, 50

    def __init__(self, tail: np.ndarray, rest: np.ndarray, draws: int):
        self.tail, self.rest, self.draws = tail, rest, draws

    @classmethod
    def from_draws(cls, values: np.ndarray) -> "NullDistribution":
        values = np.sort(values)
        cut = int(cls.TAIL * len(values))
        return cls(values[:cut], values[cut :: cls.THIN], len(values))

    def p_value(self, observed):
        """P(null <= observed), counted conservatively: (count + sqrt(count) + 1) / (draws + 1), one standard error of the
        count above it, so that the draws' own sampling error errs on the safe side; infinity (no look yet): 1."""
        observed = np.asarray(observed, dtype=float)
        count = np.searchsorted(self.tail, observed, side="right")
        above = len(self.tail) + self.THIN * np.searchsorted(self.rest, observed, side="right")
        count = np.where(observed > self.tail[-1], np.minimum(above, self.draws), count)
        return np.where(np.isinf(observed), 1.0, np.minimum(1.0, (count + np.sqrt(count) + 1) / (self.draws + 1)))

    def quantile(self, alpha: float) -> float:
        """The largest weighted minimum p whose p-value is <= alpha (exact within the lowest 2%, to THIN draws above)."""
        target = alpha * (self.draws + 1) - 1
        if target < 0:
            return 0.0
        allowed = math.floor(((math.sqrt(1 + 4 * target) - 1) / 2) ** 2) - 1  # the count c with c + sqrt(c) <= target, as an index
        if allowed < 0:
            return 0.0
        if allowed < len(self.tail):
            return float(self.tail[allowed])
        return float(self.rest[min((allowed - len(self.tail)) // self.THIN, len(self.rest) - 1)])


def _cached(key: dict, draws: int, compute) -> NullDistribution:
    name = hashlib.sha256(json.dumps({**key, "version": VERSION, "draws": draws}, sort_keys=True).encode()).hexdigest()[:20]
    path = CACHE / f"{name}.npz"
    try:
        with np.load(path) as saved:
            return NullDistribution(saved["tail"], saved["rest"], int(saved["draws"]))
    except (OSError, KeyError, ValueError):
        pass
    made = compute()
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(partial, tail=made.tail, rest=made.rest, draws=made.draws)
        partial.replace(path)
    except OSError:
        pass  # an unwritable cache costs the next process the same few seconds, nothing else
    return made


def _with_draws(make):
    """`make(*args, draws)`, cached, called with NULL_DRAWS as it is at the call (tests lower it)."""
    cached = functools.cache(make)
    return functools.wraps(make)(lambda *args: cached(*args, NULL_DRAWS))


@_with_draws
def efficacy_null(looks: tuple[int, ...], bounds: tuple[float, ...] | None, draws: int) -> NullDistribution:
    """The weighted minimum two-sided p over the looks a null path takes, stopped where |t| < bounds (None: never)."""
    def compute() -> NullDistribution:
        w, found = weights(looks), []
        for t in _t_paths(looks, 0.0, draws, NULL_SEED):
            least, alive = np.full(len(t), np.inf), np.ones(len(t), dtype=bool)
            for k, n in enumerate(looks):
                least = np.where(alive, np.minimum(least, _two_sided(t[:, k], n - 1) / w[k]), least)
                if bounds is not None and k < len(looks) - 1:
                    alive &= np.abs(t[:, k]) >= bounds[k]
            found.append(least)
        return NullDistribution.from_draws(np.concatenate(found))

    return _cached({"kind": "efficacy", "looks": looks, "power": WEIGHT_POWER, "bounds": bounds and [round(b, 9) for b in bounds]},
                   draws, compute)


@_with_draws
def tost_null(looks: tuple[int, ...], draws: int) -> NullDistribution:
    """The weighted minimum one-sided p over every look (TOST's null at the margin), no stops."""
    def compute() -> NullDistribution:
        w, found = weights(looks), []
        for t in _t_paths(looks, 0.0, draws, NULL_SEED + 1):
            found.append(np.min(special.stdtr(np.array(looks) - 1, -t) / w, axis=1))
        return NullDistribution.from_draws(np.concatenate(found))

    return _cached({"kind": "tost", "looks": looks, "power": WEIGHT_POWER}, draws, compute)


def final_z(looks: tuple[int, ...], cells: int, alpha: float = ALPHA) -> float:
    """The normal quantile of the last look's nominal level at Holm's first step (alpha / cells), without stops."""
    return float(scipy_stats.norm.isf(efficacy_null(looks, None).quantile(alpha / max(1, cells)) / 2))


def conditional_power(t: float, n: int, looks: tuple[int, ...], theta: float, z_final: float) -> float:
    """The chance that a true standardized change `theta` (change / SD) takes t at n seeds past the last look's bound."""
    big = looks[-1]
    if n >= big:
        return float(abs(t) >= z_final)
    return float(scipy_stats.norm.cdf((abs(t) * math.sqrt(n) + theta * (big - n) - z_final * math.sqrt(big)) / math.sqrt(big - n)))


@_with_draws
def futility_bounds(looks: tuple[int, ...], theta: float, cells: int, alpha: float, draws: int) -> tuple[float, ...]:
    """Per look, the |t| below which a cell stops for futility (the last look: 0, it ends there anyway)."""
    big, k_last = looks[-1], len(looks) - 1
    spent = np.zeros(len(looks))
    paths = np.concatenate(list(_t_paths(looks, theta, PLAN_DRAWS, PLAN_SEED)))
    alive = np.ones(len(paths), dtype=bool)
    for k in range(k_last):
        share = FUTILITY_BETA * (looks[k] - (looks[k - 1] if k else 0)) / big
        stop = int(round(share * len(paths)))
        if stop:
            spent[k] = np.sort(np.abs(paths[alive, k]))[stop - 1]
            alive &= np.abs(paths[:, k]) > spent[k]
    z_final, z_floor = final_z(looks, cells, alpha), scipy_stats.norm.ppf(CP_FLOOR)
    bounds = []
    for k, n in enumerate(looks):
        if k == k_last:
            bounds.append(0.0)
            continue
        cp = (z_final * math.sqrt(big) - theta * (big - n) + z_floor * math.sqrt(big - n)) / math.sqrt(n) if k >= 1 else 0.0
        bounds.append(float(max(spent[k], cp, 0.0)))
    return tuple(bounds)


@dataclass(frozen=True)
class Rule:
    """What a table's decisions depend on besides its data."""

    design: SeedsDesign
    effect: float  # points: the smallest difference worth reporting
    margin: float  # points: equivalence within +-margin
    cells: int  # the family: Holm's m, fixed by the study's cells (a combined cell counts when the study can have one)
    alpha: float = ALPHA
    stopping: bool = True  # False (secondary comparisons): no futility stops, the null without them

    @property
    def looks(self) -> tuple[int, ...]:
        return self.design.looks()

    @property
    def theta(self) -> float:
        return self.effect / self.design.sd

    def bounds(self) -> tuple[float, ...]:
        if not self.stopping:
            return (0.0,) * len(self.looks)
        return futility_bounds(self.looks, round(self.theta, 9), self.cells, self.alpha)

    def efficacy(self) -> NullDistribution:
        return efficacy_null(self.looks, self.bounds() if self.stopping else None)

    def nominal(self, level: float, look: int, binding: bool = True) -> float:
        """The plain p look `look` (0-based) must reach for the sequential p-value to be <= level."""
        null = self.efficacy() if binding else efficacy_null(self.looks, None)
        return null.quantile(level) * float(weights(self.looks)[look])


# ----- the rule on many tables at once -----

OPEN, BETTER, WORSE, EQUIVALENT, IDENTICAL, FUTILE, UNDECIDED = range(7)
VERDICTS = ("open", "better", "worse", "equivalent", "identical", "futile", "undecided")
DECIDED = ("better", "worse", "equivalent", "identical")


@dataclass
class Replayed:
    """The rule's outcome per (table, cell), and how far each table got; `replay` fills it stage by stage."""

    verdict: np.ndarray  # codes (OPEN ...)
    stage: np.ndarray  # the stage that decided or stopped it; 0: none
    n: np.ndarray  # paired seeds at its last look (0: none yet)
    mean: np.ndarray  # mean difference at that look
    t: np.ndarray
    q: np.ndarray  # sequential p-value (efficacy)
    q_holm: np.ndarray
    q_tost: np.ndarray
    q_tost_holm: np.ndarray
    stages_done: np.ndarray  # (tables,)
    running: np.ndarray  # still getting seeds
    least: np.ndarray  # weighted minimum p so far (inf: no look yet)
    least_tost: np.ndarray
    waiting: np.ndarray  # (tables,): a stage without all its seeds; the table waits there

    @classmethod
    def start(cls, tables: int, cells: int, running: np.ndarray | None) -> "Replayed":
        shape = (tables, cells)
        zeros, ones, inf = (lambda: np.zeros(shape, int)), (lambda: np.ones(shape)), (lambda: np.full(shape, np.inf))
        alive = np.ones(shape, dtype=bool) if running is None else running.copy()
        return cls(zeros(), zeros(), zeros(), np.zeros(shape), np.zeros(shape), ones(), ones(), ones(), ones(), np.zeros(tables, int),
                   alive, inf(), inf(), np.zeros(tables, dtype=bool))

    def due(self, looking: np.ndarray, need: np.ndarray, have: np.ndarray, wait: bool) -> np.ndarray:
        """The cells that take a look this stage; a table waits if one of them lacks its seeds (else that cell just skips)."""
        due = self.running & looking[None, :] & ~self.waiting[:, None]
        lacking = due & (have < need)[None, :]
        if wait:
            self.waiting |= lacking.any(axis=1)
        return due & ~self.waiting[:, None] & ~lacking

    def look(self, due, need, k, totals, w, margin, identical_through, stage) -> None:
        """Each due cell's paired t at its look: mean, t, and its weighted minimum p so far (efficacy and TOST)."""
        m, t, p, p_tost = _look_stats(*totals, np.maximum(need, 1)[None, :], margin)
        self.n, self.mean, self.t = np.where(due, need, self.n), np.where(due, m, self.mean), np.where(due, t, self.t)
        self.least = np.where(due, np.minimum(self.least, p / w[k]), self.least)
        self.least_tost = np.where(due, np.minimum(self.least_tost, p_tost / w[k]), self.least_tost)
        self._end(due & (identical_through >= need[None, :]), IDENTICAL, stage)

    def test(self, rule: Rule, live: np.ndarray, efficacy: NullDistribution, tost: NullDistribution, stage: int) -> None:
        """Holm over the table on every cell's sequential p-values; a running cell is decided where they allow."""
        q, q_tost = efficacy.p_value(self.least), tost.p_value(self.least_tost)
        for target, value in ((self.q, q), (self.q_holm, stats.holm(q)), (self.q_tost, q_tost), (self.q_tost_holm, stats.holm(q_tost))):
            target[live] = value[live]
        candidates = self.running & live[:, None]
        equivalent = candidates & (self.q_tost_holm < rule.alpha)
        rejected = candidates & ~equivalent & (self.q_holm < rule.alpha)
        self._end(equivalent, EQUIVALENT, stage)
        self._end(rejected & (self.mean > 0), BETTER, stage)
        self._end(rejected & (self.mean <= 0), WORSE, stage)

    def stop(self, due, k, k_last, bounds, stage) -> None:
        """Futility at a look but the last (|t| below its bound); undecided at the last."""
        self._end(due & self.running & (k < k_last)[None, :] & (np.abs(self.t) < np.array(bounds)[np.clip(k, 0, k_last)][None, :]),
                  FUTILE, stage)
        self._end(due & self.running & (k == k_last)[None, :], UNDECIDED, stage)

    def _end(self, where: np.ndarray, verdict: int, stage: int) -> None:
        self.verdict[where], self.stage[where] = verdict, stage
        self.running &= ~where


def _look_stats(sums, squares, n, margin):
    """Mean, t, two-sided p and TOST p of differences whose first n sum and square-sum are given (n >= 2)."""
    mean = sums / n
    sd = np.sqrt(np.maximum(squares - n * mean**2, 0) / np.maximum(n - 1, 1))
    se = sd / np.sqrt(n)
    df = np.maximum(n - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / se, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
        p = np.where(se > 0, _two_sided(t, df), np.where(mean == 0, 1.0, 0.0))
        lower = special.stdtr(df, -(mean + margin) / se)  # H0: mean <= -margin
        upper = special.stdtr(df, (mean - margin) / se)  # H0: mean >= +margin
        p_tost = np.where(se > 0, np.maximum(lower, upper), np.where(np.abs(mean) < margin, 0.0, 1.0))
    return mean, t, p, p_tost


def replay(rule: Rule, diffs: np.ndarray, have: np.ndarray, identical_through: np.ndarray, lag: np.ndarray,
           running: np.ndarray | None = None, wait: bool = True) -> Replayed:
    """The rule, stage by stage, on (tables, cells, seeds) differences in points.

    have (cells,): paired seeds at hand per cell (later entries of `diffs` are ignored); identical_through
    (tables, cells): how many leading seeds made the baseline's very predictions; lag (cells,): stages a
    cell starts late (the combined cell: 1); running (tables, cells): cells in the design at all (default all).
    A table stops at the first stage some running cell lacks seeds for (`wait=False`: such a cell just takes no more looks).
    """
    tables, cells, width = diffs.shape
    looks, w, k_last = np.array(rule.looks), weights(rule.looks), len(rule.looks) - 1
    efficacy, tost, bounds = rule.efficacy(), tost_null(rule.looks), rule.bounds()
    clean = np.nan_to_num(diffs)
    sums, squares = np.cumsum(clean, axis=2), np.cumsum(clean**2, axis=2)
    out = Replayed.start(tables, cells, running)
    for stage in range(1, len(looks) + int(lag.max(initial=0)) + 1):
        k = stage - 1 - lag
        looking = (k >= 0) & (k <= k_last)
        need = np.where(looking, looks[np.clip(k, 0, k_last)], 0)
        due = out.due(looking, need, have, wait)
        if not due.any():
            continue
        index = np.broadcast_to(np.clip(need - 1, 0, width - 1)[None, :, None], (tables, cells, 1))
        totals = [np.take_along_axis(a, index, axis=2)[..., 0] for a in (sums, squares)]
        out.look(due, need, np.clip(k, 0, k_last), totals, w, rule.margin, identical_through, stage)
        live = ~out.waiting & due.any(axis=1)
        out.test(rule, live, efficacy, tost, stage)
        out.stop(due, k, k_last, bounds, stage)
        out.stages_done[live] = stage
    return out


def rci_bounds(rule: Rule, diffs: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repeated 95% intervals of (tables, cells) comparisons at their last looks n (NaN where n < 2)."""
    looks = np.array(rule.looks)
    k = np.clip(np.searchsorted(looks, n), 0, len(looks) - 1)
    nominal = efficacy_null(rule.looks, None).quantile(rule.alpha) * weights(rule.looks)[k]
    index = np.clip(n - 1, 0, diffs.shape[2] - 1)[..., None]
    clean = np.nan_to_num(diffs)
    total = np.take_along_axis(np.cumsum(clean, axis=2), index, axis=2)[..., 0]
    squares = np.take_along_axis(np.cumsum(clean**2, axis=2), index, axis=2)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n
        sd = np.sqrt(np.maximum(squares - n * mean**2, 0) / (n - 1))
        half = scipy_stats.t.ppf(1 - nominal / 2, n - 1) * sd / np.sqrt(n)
    ok = n >= 2
    return np.where(ok, mean - half, np.nan), np.where(ok, mean + half, np.nan)


# ----- one table: decisions with their reasons -----


@dataclass
class Comparison:
    """A cell against its reference (usually the baseline), per paired seed in seed order."""

    name: str
    diffs: list[float]  # points
    identical: list[bool]  # same prediction on every test image for that seed
    lag: int = 0  # stages it starts late: the combined cell, tested on the seeds after the first stage's
    planned: bool = True  # False: in the family, but not run (a combination validation did not choose)


@dataclass
class Decision:
    """What the rule says of one comparison after the stages its data complete."""

    verdict: str  # better, worse, equivalent, identical, futile, undecided, inconclusive, open, not run, too few seeds
    stage: int | None = None  # the stage that decided or stopped it
    n: int = 0  # paired seeds at its last look
    q: float | None = None  # sequential p-value (with one look: the plain p)
    q_holm: float | None = None
    q_tost: float | None = None  # the same for equivalence within the margin
    q_tost_holm: float | None = None
    rci: tuple[float, float] | None = None  # 95% repeated confidence interval at its last look
    seeds_needed: int | None = None  # the first look with 80% power at +-effect for its observed SD; None: none within the design
    chance: float | None = None  # conditional power at +-effect from its last look (planned SD), open and futile cells
    least: float = math.inf  # its weighted minimum p over the looks so far
    reason: str = ""  # why it stopped, or what it waits for


@dataclass
class Outcome:
    """The family after the stages the data complete: a decision per comparison and what comes next."""

    decisions: dict[str, Decision]
    rule: Rule | None
    stages_done: int  # complete stages (a fixed design: 1 once every cell has its seeds)
    next_looks: dict[str, int] = field(default_factory=dict)  # open cell -> paired seeds it needs by the end of the next stage

    @property
    def design(self) -> SeedsDesign | None:
        return self.rule.design if self.rule else None

    @property
    def open_cells(self) -> list[str]:
        return [name for name, d in self.decisions.items() if d.verdict == "open"]


def rci(diffs: list[float], nominal: float) -> tuple[float, float]:
    """The t interval at level 1 - nominal: a look's repeated confidence interval."""
    found = stats.paired_t(diffs, 0.0, 1 - nominal)
    return found.ci_low, found.ci_high


def seeds_for_effect(rule: Rule, sd: float, look: int, level: float) -> int | None:
    """The first look from `look` (0-based) on whose test at its nominal level has 80% power at +-effect; None if none."""
    for k in range(look, len(rule.looks)):
        n = rule.looks[k]
        if float(stats.power_paired_t(np.array([n]), rule.effect, sd, rule.nominal(level, k))[0]) >= POWER:
            return n
    return None


def decide(comparisons: list[Comparison], design: SeedsDesign | None, margin: float, effect: float = 0.5, alpha: float = ALPHA,
           stopping: bool = True) -> Outcome:
    """Replay the design stage by stage on the data at hand; a fixed design is one look at every seed.

    `stopping=False` (secondary comparisons): each comparison takes every look its seeds reach with the
    null without futility stops, and only a verdict (or none: inconclusive) comes out.
    """
    if design is None:
        return _fixed(comparisons, margin, effect, alpha)
    rule = Rule(design, effect, margin, len(comparisons), alpha)
    if not stopping:
        return _read_only(comparisons, rule)
    diffs, have = _one_table(comparisons)
    identical = np.array([[next((j for j, same in enumerate(c.identical) if not same), len(c.identical)) for c in comparisons]])
    planned = np.array([[c.planned for c in comparisons]])
    done = replay(rule, diffs, have, identical, np.array([c.lag for c in comparisons]), planned)
    stages_done = int(done.stages_done[0])
    decisions, next_looks = {}, {}
    for i, c in enumerate(comparisons):
        if not c.planned:
            decisions[c.name] = Decision("not run", reason="validation chose no combination of two or more levels")
            continue
        d = _decision(rule, done, i, c)
        decisions[c.name] = d
        if d.verdict == "open":
            _open(rule, c, d, stages_done, next_looks)
            if c.diffs and len(c.diffs) >= next_looks[c.name] and all(c.identical):  # a fact, not a test: no need to wait for the stage
                decisions[c.name] = Decision("identical", stages_done + 1, len(c.diffs), reason="the same prediction on every test image for every seed")
                del next_looks[c.name]
    return Outcome(decisions, rule, stages_done, next_looks)


def _one_table(comparisons: list[Comparison]) -> tuple[np.ndarray, np.ndarray]:
    """The comparisons as one table for `replay`: (1, cells, seeds) differences, NaN past a cell's own, and its seeds."""
    have = np.array([len(c.diffs) for c in comparisons])
    diffs = np.full((1, len(comparisons), max(1, *have) if len(have) else 1), np.nan)
    for i, c in enumerate(comparisons):
        diffs[0, i, : len(c.diffs)] = c.diffs
    return diffs, have


def _decision(rule: Rule, done: Replayed, i: int, c: Comparison) -> Decision:
    code, n = int(done.verdict[0, i]), int(done.n[0, i])
    d = Decision(VERDICTS[code], int(done.stage[0, i]) or None, n, least=float(done.least[0, i]))
    if n:
        d.q, d.q_holm = float(done.q[0, i]), float(done.q_holm[0, i])
        d.q_tost, d.q_tost_holm = float(done.q_tost[0, i]), float(done.q_tost_holm[0, i])
        look = rule.looks.index(n)
        if n >= 2:
            d.rci = rci(c.diffs[:n], rule.nominal(rule.alpha, look, binding=False))
    if code == IDENTICAL:
        d.reason = "the same prediction on every test image for every seed"
    elif code == EQUIVALENT:
        d.reason = f"within ±{rule.margin:g} points"
    elif code in (FUTILE, UNDECIDED) or (code == OPEN and n):
        _power_note(rule, done, i, c, d)
    return d


def _power_note(rule: Rule, done: Replayed, i: int, c: Comparison, d: Decision) -> None:
    """Seeds needed and conditional power for a cell without a verdict, and the futility reason in plain words."""
    look = rule.looks.index(d.n)
    _, sd = stats.mean_std(c.diffs[: d.n])
    level = rule.alpha / max(1, rule.cells - int(np.isin(done.verdict[0], (BETTER, WORSE)).sum()))
    d.seeds_needed = seeds_for_effect(rule, sd, look, level) if sd == sd else None
    t = float(done.t[0, i])
    d.chance = conditional_power(t, d.n, rule.looks, rule.theta, final_z(rule.looks, rule.cells, rule.alpha))
    if d.verdict == "futile":
        d.reason = (f"a true change of ±{rule.effect:g} points would be shown with about {d.chance:.0%} chance from here "
                    f"(|t| {abs(t):.2f} below the bound {rule.bounds()[look]:.2f} at {d.n} seeds, planned for SD {rule.design.sd:g})")
    elif d.verdict == "undecided":
        d.reason = f"reached max ({rule.design.max} seeds) without a verdict"


def _open(rule: Rule, c: Comparison, d: Decision, stages_done: int, next_looks: dict[str, int]) -> None:
    k = stages_done - c.lag  # its look at the next stage (0-based)
    if k < 0:
        d.reason = "chosen on validation once the first stage is complete, then tested on the seeds after the first stage's"
        return
    target = rule.looks[min(k, len(rule.looks) - 1)]
    next_looks[c.name] = target
    fresh = " after the first stage's" if c.lag else ""
    if len(c.diffs) >= target:
        d.reason = (f"its look at {target} seeds{fresh} comes with stage {stages_done + 1} ({len(c.diffs)} in), once every open "
                    "cell has its seeds")
    else:
        d.reason = f"stage {stages_done + 1} runs it to {target} seeds{fresh} ({len(c.diffs)} so far)"


def _fixed(comparisons: list[Comparison], margin: float, effect: float, alpha: float) -> Outcome:
    """One look per cell at all its paired seeds: plain p, Holm, no stopping."""
    tested = [c for c in comparisons if len(c.diffs) >= stats.MIN_SEEDS and c.planned]
    plain = [stats.paired_t(c.diffs, margin) for c in tested]
    q_holm, q_tost_holm = stats.holm([x.p for x in plain]).tolist(), stats.holm([x.p_tost for x in plain]).tolist()
    decisions = {}
    rejected = sum(h < alpha for h in q_holm)
    for c, x, qh, qth in zip(tested, plain, q_holm, q_tost_holm):
        d = Decision("inconclusive", 1, len(c.diffs), x.p, qh, x.p_tost, qth, (x.ci_low, x.ci_high))
        if all(c.identical):
            d.verdict, d.reason = "identical", "the same prediction on every test image for every seed"
        elif qth < alpha:
            d.verdict, d.reason = "equivalent", f"within ±{margin:g} points"
        elif qh < alpha:
            d.verdict = "better" if x.diff > 0 else "worse"
        else:
            d.seeds_needed = _fixed_seeds(effect, x.sd, alpha / max(1, len(tested) - rejected))
        decisions[c.name] = d
    for c in comparisons:
        if c.name in decisions:
            continue
        if not c.planned:
            decisions[c.name] = Decision("not run", reason="validation chose no combination of two or more levels")
        elif c.diffs and all(c.identical):
            decisions[c.name] = Decision("identical", n=len(c.diffs), reason="the same prediction on every test image for every seed")
        else:
            decisions[c.name] = Decision("too few seeds", n=len(c.diffs), reason=f"fewer than {stats.MIN_SEEDS} paired seeds")
    return Outcome(decisions, None, 1)


def _fixed_seeds(effect: float, sd: float, level: float) -> int | None:
    return stats.seeds_for_power(lambda n: stats.power_paired_t(n, effect, sd, level), most=MOST_SEEDS)


def _read_only(comparisons: list[Comparison], rule: Rule) -> Outcome:
    """Every look each comparison's seeds reach, the null without stops, Holm at each stage; verdicts only."""
    rule = replace(rule, stopping=False)
    zero = np.zeros(len(comparisons), int)
    done = replay(rule, *_one_table(comparisons), zero[None, :], zero, wait=False)
    decisions = {}
    for i, c in enumerate(comparisons):
        n, verdict = int(done.n[0, i]), VERDICTS[done.verdict[0, i]]
        d = Decision(verdict if verdict in DECIDED else "inconclusive" if n else "too few seeds", int(done.stage[0, i]) or None, n)
        if n:
            d.q, d.q_holm, d.q_tost, d.q_tost_holm = (float(x[0, i]) for x in (done.q, done.q_holm, done.q_tost, done.q_tost_holm))
            d.rci = rci(c.diffs[:n], rule.nominal(rule.alpha, rule.looks.index(n), binding=False)) if n >= 2 else None
        if d.verdict not in DECIDED:
            d.stage = None
        d.reason = f"within ±{rule.margin:g} points" if d.verdict == "equivalent" else ""
        decisions[c.name] = d
    return Outcome(decisions, rule, 0)
