"""Paired tests, ranks, average ranks and floors: whether a difference on the leaderboard is real.

The per-seed values of every run are the raw material (`seed_values`); the leaderboard's means and
intervals come from `bench.report.leaderboard.aggregate`; both are cut from the records' one long
table (`bench.results.table`). A referee asks of every "A beats B" whether it
survives a test that does not lean on assumptions a handful of seeds cannot check, so every
decision here (an outcome, a rank, a claim's verdict in `bench.report.claims`) comes from a paired
**sign-flip test** of the per-seed differences, corrected for multiplicity with **Holm**, and never
from an interval alone. Definitions, which the README repeats:

- **Pairing.** Two rows are paired by student seed, over the seeds both finished, and only where
  both students were distilled from the same teacher seed (`teacher_seed`, from
  `Record.teacher_seed`); a seed whose teacher seeds differ is skipped and counted
  (`teacher_mismatch`), since its difference would mix the students' effect with the teachers'.
- **Paired comparison** (`paired_difference`): d = method − baseline per paired seed; its mean,
  standard deviation, 95 % Student-t interval and Cohen's d_z = mean(d) / sd(d) (NaN when sd = 0).
  The p-value is that of the exact sign-flip (permutation) test: under the null hypothesis the
  differences are symmetric about 0, so every one of the 2^n patterns of their signs is equally
  likely; the two-sided p is the share of patterns whose |mean| is at least the observed |mean|
  (ties within a relative tolerance of 1e-9 count as "at least"). Up to 16 pairs every pattern is
  enumerated (`p_method` `exact`); above that 100 000 patterns are drawn with a fixed seed and
  p = (1 + hits) / (1 + 100 000) (`monte_carlo`), the observed pattern counting as one. The test
  needs no normality, and is honest about what few seeds can show: with n pairs the smallest
  two-sided p is 2 / 2^n, i.e. 0.5 for n = 2, 0.25 for n = 3, 0.125 for n = 4, 0.0625 for n = 5;
  below 6 seeds no difference is significant at 5 %, however large. Below two pairs everything but
  the mean is NaN.
- **A zero-width interval never decides.** When every seed gives the same difference the t-interval
  collapses to [d, d]; it is reported, but outcomes and verdicts come from the sign-flip p-value,
  which for identical differences on n seeds is 2 / 2^n, not 0.
- **Outcome** of a comparison: `better` / `worse` (read with the metric's direction) when its
  Holm-adjusted p (`p_holm`) is below 0.05, else `inconclusive`. The Holm family is every method
  compared with the same baseline on the same (profile, dataset, metric).
- **Seeds for 80 % power** (`seeds_for_power`): the smallest n ≥ 2 at which a two-sided paired
  t-test at α = 0.05 has power ≥ 0.8 when the true standardised effect is the observed d_z
  (noncentral t), and never fewer than the sign-flip test needs to reach α at all
  (`fewest_seeds`: 6, or 5 one-sided), since that test decides. It says how far from a decision
  a comparison is; NaN when d_z is 0 or undefined, `inf` when more than 10 000 seeds would be
  needed.
- **Rank** of a student row on one (profile, dataset, metric) (`ci_ranks`): over the seeds every
  student method there has in common (and whose teacher seeds agree), every pair of methods is
  compared with the two-sided sign-flip test, Holm-corrected over the table's pairs; a method's
  rank is 1 + the number of other methods significantly better than it (p_holm < 0.05, on the
  better side by the metric's direction). Methods nobody beats share rank 1, and ranks can skip.
  With fewer than 6 common seeds no pair can be significant, so every method ranks 1: the table
  does not separate them. Where at least three methods share more seeds than all do (the claims'
  twelve beside the screens' three), only those are ranked, on their seeds; the screens get no
  rank (`ranking_scope`) and the site marks them. The teacher and control rows are references,
  not competitors: they get no rank. Metrics without a direction get no rank.
- **Average rank** per (profile, track, metric) (`average_ranks`): only over the methods that were
  ranked on every dataset of the track where the metric was ranked; their ranks are computed again
  among those methods alone (so that a method missing somewhere does not move the others), then
  averaged over all those datasets. A method missing on a dataset gets no average rank (NaN) and a
  `note` naming the datasets it misses.
- **Excess over the strongest floor** (`explanation_excess`): explanation agreement above the best
  control row (random explainer, permuted teacher, untrained student, ...) of the same teacher.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from bench.core.vocabulary import BASELINES, FLOOR_ROWS
from bench.report.leaderboard import t_quantile
from bench.results.table import Records, as_long_table

log = logging.getLogger(__name__)

Alternative = Literal["two-sided", "greater", "less"]

SEED_COLUMNS = [
    "profile", "dataset", "modality", "method", "role", "metric", "category",
    "higher_is_better", "seed", "teacher_seed", "value",
]  # fmt: skip
COMPARISON_COLUMNS = [
    "profile", "dataset", "modality", "method", "baseline", "metric", "category",
    "higher_is_better", "n", "seeds", "teacher_mismatch", "mean_diff", "std_diff", "ci95_low",
    "ci95_high", "cohens_dz", "p_value", "p_method", "p_holm", "seeds_for_80_power", "outcome",
]  # fmt: skip
AVERAGE_RANK_COLUMNS = [
    "profile", "modality", "method", "metric", "mean_rank", "n_datasets", "dataset_ranks", "note",
]  # fmt: skip
ALPHA = 0.05
# The verdict of a test whose seeds cannot reach α whatever their values (`fewest_seeds`).
TOO_FEW_SEEDS = "too few seeds"
EXACT_MAX_N = 16
MONTE_CARLO_PATTERNS = 100_000
MONTE_CARLO_SEED = 0
MONTE_CARLO_CHUNK = 10_000
POWER = 0.8
POWER_CAP = 10_000
EXCESS_SUFFIX = "_excess"
EXCESS_CATEGORY = "explanation_excess"
# A pattern's |mean| within this share of the differences' scale of the observed one is a tie:
# the same sum added in another order must not fall on the wrong side.
TIE_TOLERANCE = 1e-9


def seed_values(data: Records | pd.DataFrame) -> pd.DataFrame:
    """One row per (run, metric) of the `ok` records: the raw per-seed values (nulls dropped).

    `data`: records, or their long table (`bench.results.table`), which the report builds once.
    `teacher_seed` is the seed of the teacher the run used (`Record.teacher_seed`, a
    nullable integer), so that paired comparisons can refuse to pair students of different
    teachers.
    """
    table = as_long_table(data)
    kept = table[(table.status == "ok") & table.value.notna()]
    # Types as if built from these rows alone: a direction that is None only in rows dropped here
    # leaves the column boolean.
    return kept[SEED_COLUMNS].reset_index(drop=True).infer_objects()


def _optional_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


# --- the sign-flip test, Holm, power --------------------------------------------------------------


@functools.lru_cache(maxsize=EXACT_MAX_N + 1)
def _all_signs(n: int) -> np.ndarray:
    """Every sign pattern of n differences, (2^n, n); row 0 (all +1) is the observed one."""
    codes = np.arange(2**n, dtype=np.int64)[:, None]
    signs = 1.0 - 2.0 * ((codes >> np.arange(n)) & 1)
    signs.setflags(write=False)
    return signs


@functools.lru_cache(maxsize=8)
def _drawn_signs(n: int) -> np.ndarray:
    """The Monte Carlo sign patterns of n differences, (100 000, n) as int8 ±1.

    Drawn from a generator seeded with `MONTE_CARLO_SEED` in chunks of `MONTE_CARLO_CHUNK`, so
    they are the same for every test of n pairs: drawing them once per n instead of once per test
    is what keeps thousands of comparisons of 17+ seeds in seconds. They take n × 100 KB.
    """
    rng = np.random.default_rng(MONTE_CARLO_SEED)
    chunks = []
    for start in range(0, MONTE_CARLO_PATTERNS, MONTE_CARLO_CHUNK):
        size = min(MONTE_CARLO_CHUNK, MONTE_CARLO_PATTERNS - start)
        chunks.append((1 - 2 * rng.integers(0, 2, size=(size, n))).astype(np.int8))
    signs = np.concatenate(chunks)
    signs.setflags(write=False)
    return signs


def _hits(means: np.ndarray, observed: np.ndarray, tol: np.ndarray, alternative: str) -> np.ndarray:
    """Per row of `means` (tests × patterns), how many patterns are at least as extreme."""
    if alternative == "two-sided":
        return (np.abs(means) >= (np.abs(observed) - tol)[:, None]).sum(axis=1)
    if alternative == "greater":
        return (means >= (observed - tol)[:, None]).sum(axis=1)
    if alternative == "less":
        return (means <= (observed + tol)[:, None]).sum(axis=1)
    raise ValueError(f"alternative must be two-sided, greater or less, not {alternative!r}")


def sign_flip_pvalues(
    diffs: np.ndarray, alternative: Alternative = "two-sided", monte_carlo: bool = True
) -> tuple[np.ndarray, str]:
    """Sign-flip p-values of the mean of each row of `diffs` (tests × pairs); and the method used.

    Rows are tested at once because the ranks compare every pair of a table on the same seeds:
    one matrix product instead of thousands of loops. `greater` tests mean > 0, `less` mean < 0.
    Exact (all 2^n patterns) up to 16 pairs, else 100 000 patterns drawn with a fixed seed, so the
    same records always give the same p. `monte_carlo=False` replaces the drawn patterns by the
    normal limit of the sign-flip distribution (the sum of s·d has mean 0 and variance Σd²),
    for the thousands of tests of the seed resamples (`bench.report.stability`), where drawing
    100 000 patterns per test of hundreds of seeds would take minutes.
    """
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    k, n = diffs.shape
    if n == 0:
        return np.full(k, math.nan), ""
    observed = diffs.mean(axis=1)
    tol = TIE_TOLERANCE * np.abs(diffs).max(axis=1)
    hits = np.zeros(k, dtype=np.int64)
    if n <= EXACT_MAX_N:
        signs = _all_signs(n)
        # Keep each block of the (tests × 2^n) matrix of means to a few million numbers.
        step = max(1, 4_000_000 // len(signs))
        for start in range(0, k, step):
            block = diffs[start : start + step]
            means = block @ signs.T / n
            hits[start : start + step] = _hits(
                means, observed[start : start + step], tol[start : start + step], alternative
            )
        return hits / len(signs), "exact"
    if not monte_carlo:
        return _normal_pvalues(diffs, alternative), "normal"
    drawn = _drawn_signs(n)
    for start in range(0, MONTE_CARLO_PATTERNS, MONTE_CARLO_CHUNK):
        signs = drawn[start : start + MONTE_CARLO_CHUNK].astype(float)
        hits += _hits(diffs @ signs.T / n, observed, tol, alternative)
    return (hits + 1) / (MONTE_CARLO_PATTERNS + 1), "monte_carlo"


def _normal_pvalues(diffs: np.ndarray, alternative: Alternative) -> np.ndarray:
    """The sign-flip test's p-values in its normal limit: z = Σd / √(Σd²)."""
    scale = np.sqrt((diffs**2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(scale > 0, diffs.sum(axis=1) / scale, 0.0)
    if alternative == "two-sided":
        return np.minimum(1.0, 2 * stats.norm.sf(np.abs(z)))
    if alternative == "greater":
        return stats.norm.sf(z)
    if alternative == "less":
        return stats.norm.cdf(z)
    raise ValueError(f"alternative must be two-sided, greater or less, not {alternative!r}")


def smallest_sign_flip_p(n: int, alternative: Alternative = "two-sided") -> float:
    """The smallest p-value the sign-flip test can give on `n` pairs, whatever their values: the
    observed pattern alone is as extreme, and under exact enumeration so is its mirror image in a
    two-sided test (2 / 2^n two-sided, 1 / 2^n one-sided); above `EXACT_MAX_N` pairs, the drawn
    patterns' 1 / (1 + `MONTE_CARLO_PATTERNS`). NaN below two pairs, where there is no test."""
    if n < 2:
        return math.nan
    if n > EXACT_MAX_N:
        return 1 / (MONTE_CARLO_PATTERNS + 1)
    return (2 if alternative == "two-sided" else 1) / 2**n


def fewest_seeds(alternative: Alternative = "two-sided", alpha: float = ALPHA) -> int:
    """The fewest pairs on which the sign-flip test can reach `alpha` at all: 6 two-sided and 5
    one-sided at 0.05. No number of seeds for power is smaller than this."""
    for n in range(2, EXACT_MAX_N + 2):
        if smallest_sign_flip_p(n, alternative) < alpha:
            return n
    raise ValueError(f"no number of pairs reaches alpha = {alpha} with this sign-flip test")


def holm_reachable(floors: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Which tests of one Holm family could be rejected for some values, from the smallest p each
    can give (`floors`: `smallest_sign_flip_p` of its seeds, 1 for a test that decides nothing).
    Holm's k-th step asks its p below α / (m − k + 1) once every earlier step passed, so at most
    L tests can be rejected, L the longest run of the sorted floors that pass their steps, and a
    test only if its floor passes step L. A family of two six-seed tests rejects nothing (2 / 64
    is above 0.05 / 2); a six-seed test beside an eight-seed one can be rejected, at the second
    step, but not beside an eight-seed and another six-seed one."""
    m = len(floors)
    ordered = sorted(math.inf if math.isnan(f) else f for f in floors)
    reachable = 0
    while reachable < m and ordered[reachable] < alpha / (m - reachable):
        reachable += 1
    if not reachable:
        return [False] * m
    return [f < alpha / (m - reachable + 1) for f in floors]


def can_separate(n_seeds: float, n_methods: int, alpha: float = ALPHA) -> bool:
    """Whether a table's paired ranks could tell any two of `n_methods` apart on `n_seeds`: Holm
    over the pairs (`paired_ranks`) must be able to reject one (`holm_reachable`)."""
    pairs = n_methods * (n_methods - 1) // 2
    smallest = smallest_sign_flip_p(int(n_seeds)) if n_seeds == n_seeds else math.nan
    return any(holm_reachable([smallest] * pairs, alpha))


def sign_flip_pvalue(
    diffs: Sequence[float] | np.ndarray, alternative: Alternative = "two-sided"
) -> float:
    """The sign-flip p-value of one set of paired differences (see `sign_flip_pvalues`)."""
    array = np.asarray(diffs, dtype=float)
    if array.size == 0:
        return math.nan
    return float(sign_flip_pvalues(array[None, :], alternative)[0][0])


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input's order.

    The i-th smallest of m p-values is multiplied by m − i + 1, capped at 1, and made
    non-decreasing; adjusted p < α rejects with the family-wise error held at α whatever the
    dependence between the tests. NaN entries are not tests (fewer than two pairs): they stay NaN
    and do not count in m.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    if not len(valid):
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def t_test_power(dz: float, n: np.ndarray | int, alpha: float = ALPHA) -> np.ndarray:
    """Power of the two-sided paired t-test on n pairs at standardised effect d_z (noncentral t)."""
    n = np.asarray(n, dtype=float)
    df = n - 1
    ncp = abs(dz) * np.sqrt(n)
    critical = stats.t.ppf(1 - alpha / 2, df)
    # Both tails in one call: P(T < −c | ncp) = P(T > c | −ncp).
    both = stats.nct.sf(np.stack([critical, critical]), df, np.stack([ncp, -ncp]))
    return both[0] + both[1]


def seeds_for_power(
    dz: float, power: float = POWER, alpha: float = ALPHA, cap: int = POWER_CAP
) -> float:
    """Smallest n ≥ 2 at which the two-sided paired t-test at `alpha` has `power` at effect `dz`.

    NaN when `dz` is 0 or undefined (no effect to detect); `inf` when more than `cap` seeds would
    be needed. The noncentral t is slow, so the search starts at Guenther's approximation
    ((z₁₋α/₂ + z_power) / d_z)² + z₁₋α/₂² / 2, which is within a seed or two of the answer, and
    steps from there (power grows with n); d_z = 1 needs 10 seeds, d_z = 0.5 needs 34.
    """
    if dz is None or not math.isfinite(dz) or dz == 0:
        return math.nan
    dz = abs(dz)
    guess = float(_guess(np.asarray(dz), power, alpha))
    if guess > 2 * cap:
        return math.inf
    return _search_seeds(dz, math.ceil(guess), power, alpha, cap)


def minimum_detectable_effect(
    sd: float, n: int, power: float = POWER, alpha: float = ALPHA
) -> float:
    """The smallest true mean difference a two-sided paired t-test on `n` seeds with spread `sd`
    detects with `power` at `alpha`: (t₁₋α/₂ + t_power) · sd / √n, with n − 1 degrees of freedom.
    It says what an inconclusive test could have seen: "underpowered" is not "no effect". NaN
    with fewer than two seeds, or with a spread that is undefined or 0 (identical differences,
    e.g. accuracy moving in steps too coarse to vary, measure no spread to size an effect by).
    """
    if n is None or n < 2 or sd is None or not math.isfinite(sd) or sd <= 0:
        return math.nan
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float((critical + stats.t.ppf(power, df)) * sd / math.sqrt(n))


def _guess(dz: np.ndarray, power: float, alpha: float) -> np.ndarray:
    z_alpha, z_power = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    return ((z_alpha + z_power) / dz) ** 2 + z_alpha**2 / 2


def seeds_for_power_many(
    dz_values: Sequence[float] | np.ndarray,
    power: float = POWER,
    alpha: float = ALPHA,
    cap: int = POWER_CAP,
) -> np.ndarray:
    """`seeds_for_power` of many effects at once, for the thousands of rows of `compare`.

    One noncentral-t call evaluates the five sample sizes around each effect's Guenther guess
    (the answer lies within one seed of it for effects from 0.03 to 20); an effect whose answer
    the window does not pin down goes through the one-at-a-time search.
    """
    dz = np.abs(np.asarray(dz_values, dtype=float))
    out = np.full(dz.shape, math.nan)
    valid = np.flatnonzero(np.isfinite(dz) & (dz > 0))
    if not len(valid):
        return out
    guesses = np.ceil(_guess(dz[valid], power, alpha))
    huge = guesses > 2 * cap
    out[valid[huge]] = math.inf
    valid, guesses = valid[~huge], guesses[~huge]
    candidates = np.clip(guesses[:, None] + np.arange(-2, 3), 2, cap)
    df = candidates - 1
    ncp = dz[valid][:, None] * np.sqrt(candidates)
    critical = stats.t.ppf(1 - alpha / 2, df)
    reached = (stats.nct.sf(critical, df, ncp) + stats.nct.sf(critical, df, -ncp)) >= power
    for row, index in enumerate(valid):
        hits = np.flatnonzero(reached[row])
        if len(hits) and (hits[0] > 0 or candidates[row, 0] == 2):
            out[index] = candidates[row, hits[0]]
        else:
            out[index] = _search_seeds(float(dz[index]), int(guesses[row]), power, alpha, cap)
    return out


def _search_seeds(dz: float, start: int, power: float, alpha: float, cap: int) -> float:
    """Step from `start` to the smallest n with the wanted power (power grows with n)."""
    n = int(min(max(2, start), cap))
    if t_test_power(dz, [n], alpha)[0] >= power:
        while n > 2 and t_test_power(dz, [n - 1], alpha)[0] >= power:
            n -= 1
        return float(n)
    window = 4
    while n < cap:
        candidates = np.arange(n + 1, min(n + window, cap) + 1)
        reached = np.flatnonzero(t_test_power(dz, candidates, alpha) >= power)
        if len(reached):
            return float(candidates[reached[0]])
        n, window = int(candidates[-1]), window * 2
    return math.inf


# --- paired comparisons ---------------------------------------------------------------------------


def paired_values(
    method: Mapping[int, float],
    baseline: Mapping[int, float],
    method_teachers: Mapping[int, int | None] | None = None,
    baseline_teachers: Mapping[int, int | None] | None = None,
) -> tuple[list[int], np.ndarray, list[int]]:
    """(seeds, differences method − baseline, seeds skipped because the teacher seeds differ).

    Teacher seeds are compared only when both maps are given; None equals only None.
    """
    common = sorted(set(method) & set(baseline))
    mismatched: list[int] = []
    if method_teachers is not None and baseline_teachers is not None:
        mismatched = [s for s in common if method_teachers.get(s) != baseline_teachers.get(s)]
    seeds = [s for s in common if s not in set(mismatched)]
    diffs = np.asarray([method[s] - baseline[s] for s in seeds], dtype=float)
    return seeds, diffs, mismatched


def _summary(
    seeds: list[int], diffs: np.ndarray, mismatched: list[int], margin: float, power: bool
) -> dict[str, Any]:
    """`paired_difference`'s statistics of the differences `diffs`, all but the p-value."""
    result: dict[str, Any] = {
        "n": len(seeds),
        "seeds": " ".join(str(s) for s in seeds),
        "teacher_mismatch": len(mismatched),
        "mean_diff": float(diffs.mean()) if len(diffs) else math.nan,
        "std_diff": math.nan,
        "ci95_low": math.nan,
        "ci95_high": math.nan,
        "cohens_dz": math.nan,
        "p_value": math.nan,
        "p_method": "",
        "seeds_for_80_power": math.nan,
    }
    if len(diffs) and abs(result["mean_diff"]) <= TIE_TOLERANCE * float(np.abs(diffs).max()):
        # Differences that cancel up to rounding (+0.01 and −0.01 summed in floats give 1e-18):
        # their mean is 0, not a d_z of 1e-16 or a sign from noise.
        result["mean_diff"] = 0.0
    if len(diffs) < 2:
        return result
    sd = float(diffs.std(ddof=1))
    if sd <= TIE_TOLERANCE * float(np.abs(diffs).max()):
        # The same difference on every seed up to rounding (0.65 − 0.6 ≠ 0.55 − 0.5 in floats):
        # call it what it is, so that no d_z of 10^15 or interval of 10^-17 comes out of noise.
        sd = 0.0
    result["std_diff"] = sd
    # `bench.report.leaderboard.t_interval`'s formula.
    half = t_quantile(len(diffs) - 1) * sd / math.sqrt(len(diffs))
    result["ci95_low"], result["ci95_high"] = result["mean_diff"] - half, result["mean_diff"] + half
    if sd > 0:
        result["cohens_dz"] = result["mean_diff"] / sd
        if power:
            result["seeds_for_80_power"] = seeds_for_power((result["mean_diff"] + margin) / sd)
    return result


def paired_difference(
    method: Mapping[int, float],
    baseline: Mapping[int, float],
    *,
    method_teachers: Mapping[int, int | None] | None = None,
    baseline_teachers: Mapping[int, int | None] | None = None,
    alternative: Alternative = "two-sided",
    margin: float = 0.0,
    power: bool = True,
    monte_carlo: bool = True,
) -> dict[str, Any]:
    """Statistics of method − baseline over the seeds both have (see the module docstring).

    The p-value is the sign-flip test's of mean(d) + `margin` against 0 in the direction of
    `alternative`: two-sided with no margin for "is there a difference"; `greater` with
    margin δ for non-inferiority of a higher-is-better metric (H1: mean(d) > −δ), `less` with
    margin −δ for a lower-is-better one. Mean, sd, interval and d_z are always those of d itself;
    `seeds_for_80_power` is computed at the effect the p-value tests, (mean(d) + margin) / sd.
    `power=False` leaves that column NaN for callers that compute it in bulk; `monte_carlo=False`
    takes the normal limit above 16 pairs (`sign_flip_pvalues`).
    """
    seeds, diffs, mismatched = paired_values(method, baseline, method_teachers, baseline_teachers)
    result = _summary(seeds, diffs, mismatched, margin, power)
    if not math.isnan(result["seeds_for_80_power"]):  # NaN: no effect to size
        result["seeds_for_80_power"] = max(result["seeds_for_80_power"], fewest_seeds(alternative))
    if len(diffs) >= 2:
        p, p_method = sign_flip_pvalues((diffs + margin)[None, :], alternative, monte_carlo)
        result["p_value"], result["p_method"] = float(p[0]), p_method
    return result


def outcome(higher_is_better: Any, mean_diff: float, p_value: float, alpha: float = ALPHA) -> str:
    """`better` / `worse` when the (adjusted) p-value is below `alpha`, else `inconclusive`.

    The side is the sign of the mean difference read with the metric's direction; an interval,
    zero-width or not, plays no part.
    """
    if (
        pd.isna(p_value)
        or pd.isna(mean_diff)
        or higher_is_better is None
        or pd.isna(higher_is_better)
        or p_value >= alpha
        or mean_diff == 0
    ):
        return "inconclusive"
    return "better" if (mean_diff > 0) == bool(higher_is_better) else "worse"


SeedMap = dict[int, float]
TeacherMap = dict[int, int | None]
# (profile, dataset, metric) → method → ({seed: value}, {seed: teacher seed}): `student_values`.
StudentValues = Mapping[tuple[str, str, str], Mapping[str, tuple[Mapping[int, float], Mapping]]]


def student_values(
    seeds: pd.DataFrame,
) -> tuple[dict[tuple[str, str, str], dict[str, tuple[SeedMap, TeacherMap]]], dict]:
    """(profile, dataset, metric) → method → ({seed: value}, {seed: teacher seed}) of students.

    Built in one pass: filtering the frame per pair and metric would cost seconds on a
    default-profile result set. Also (profile, dataset, metric) → (modality, category, direction).
    """
    values: dict[tuple[str, str, str], dict[str, tuple[SeedMap, TeacherMap]]] = {}
    students = seeds[seeds.role == "student"]
    columns = ["profile", "dataset", "method", "metric", "seed", "value"]
    # Teacher seeds as int or None in one pass (NaN is the one value unequal to itself).
    teachers = [None if t != t else int(t) for t in students.teacher_seed.astype(float).tolist()]
    for profile, dataset, method, metric, seed, value, teacher in zip(
        *(students[c].tolist() for c in columns), teachers, strict=True
    ):
        by_method = values.setdefault((profile, dataset, metric), {})
        seed_map, teacher_map = by_method.setdefault(method, ({}, {}))
        seed_map[int(seed)] = float(value)
        teacher_map[int(seed)] = teacher
    info = {
        (row.profile, row.dataset, row.metric): (row.modality, row.category, row.higher_is_better)
        for row in students.drop_duplicates(["profile", "dataset", "metric"]).itertuples(
            index=False
        )
    }
    return values, info


def compare(seeds: pd.DataFrame, pairs: Sequence[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Paired comparisons per (profile, dataset, metric) of student methods with baselines.

    `pairs` lists (method, baseline); by default every student method against `scratch` and `kd`.
    A pair is compared on a dataset only where both rows exist. `p_holm` corrects the p-values of
    one baseline on one (profile, dataset, metric) across the methods compared with it; `outcome`
    reads `p_holm`.
    """
    values, info = student_values(seeds)
    rows = []
    # Rows to test, by number of pairs: each group is tested in one call (`sign_flip_pvalues`),
    # so that the Monte Carlo patterns of 17+ pairs are multiplied once per group, not per row.
    tested: dict[int, list[tuple[int, np.ndarray]]] = {}
    for (profile, dataset, metric), by_method in sorted(values.items()):
        wanted = pairs or [
            (m, b) for b in BASELINES if b in by_method for m in sorted(by_method) if m != b
        ]
        for method, baseline in wanted:
            if method not in by_method or baseline not in by_method:
                continue
            (ours, our_teachers), (theirs, their_teachers) = by_method[method], by_method[baseline]
            seeds_of, diffs, mismatched = paired_values(ours, theirs, our_teachers, their_teachers)
            if not seeds_of:
                continue
            if len(diffs) >= 2:
                tested.setdefault(len(diffs), []).append((len(rows), diffs))
            modality, category, hib = info[profile, dataset, metric]
            rows.append(
                {
                    "profile": profile,
                    "dataset": dataset,
                    "modality": modality,
                    "method": method,
                    "baseline": baseline,
                    "metric": metric,
                    "category": category,
                    "higher_is_better": hib,
                    **_summary(seeds_of, diffs, mismatched, margin=0.0, power=False),
                }
            )
    for group in tested.values():
        p, p_method = sign_flip_pvalues(np.stack([diffs for _, diffs in group]))
        for (position, _), value in zip(group, p, strict=True):
            rows[position].update(p_value=float(value), p_method=p_method)
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if table.empty:
        return table
    if table.teacher_mismatch.any():
        # Once, not per metric: the column says which comparisons lost which seeds.
        log.warning(
            "%d comparisons skipped seeds whose students had different teacher seeds "
            "(see teacher_mismatch in comparisons.csv)",
            int((table.teacher_mismatch > 0).sum()),
        )
    table["seeds_for_80_power"] = np.maximum(
        seeds_for_power_many(table.cohens_dz.to_numpy(dtype=float)), fewest_seeds()
    )
    family = ["profile", "dataset", "baseline", "metric"]
    table["p_holm"] = table.groupby(family, sort=False)["p_value"].transform(
        lambda p: pd.Series(holm(p.to_numpy()), index=p.index)
    )
    table["outcome"] = [
        outcome(hib, d, p)
        for hib, d, p in zip(table.higher_is_better, table.mean_diff, table.p_holm, strict=True)
    ]
    return table.sort_values(
        ["profile", "dataset", "metric", "baseline", "method"], ignore_index=True
    )[COMPARISON_COLUMNS]


# --- ranks ----------------------------------------------------------------------------------------


# The fewest best-covered methods ranked without the screens (`ranking_scope`): Friedman's test
# needs three, and a table of two ranked methods beside many unranked ones would say little.
MIN_SCOPE_METHODS = 3


def common_seeds(
    by_method: Mapping[str, tuple[Mapping[int, float], Mapping[int, int | None]]],
    methods: Sequence[str],
) -> list[int]:
    """The seeds every one of `methods` has, each with the same teacher seed for all, sorted."""
    if not methods:
        return []
    common = set.intersection(*(set(by_method[m][0]) for m in methods))
    return sorted(s for s in common if len({by_method[m][1].get(s) for m in methods}) == 1)


def ranking_scope(
    by_method: Mapping[str, tuple[Mapping[int, float], Mapping[int, int | None]]],
) -> tuple[list[str], list[int], str]:
    """(methods, their common seeds, scope): which methods of one table are ranked, on which seeds.

    Every method, on the seeds they all share; or, where at least `MIN_SCOPE_METHODS` methods
    share more seeds than all of them do, those best-covered methods alone. The others are
    screens (three seeds, one per teacher, in the reference profiles): ranked with the
    twelve-seed rows on the three seeds all share, no paired test could decide anything (the
    smallest sign-flip p on three pairs is 0.25) and every method would rank 1. A screen is left
    unranked instead, and the site marks it as one.
    """
    names = sorted(by_method)
    seeds = common_seeds(by_method, names)
    if not names:
        return names, seeds, "every method"
    most = max(len(by_method[m][0]) for m in names)
    covered = [m for m in names if len(by_method[m][0]) == most]
    if len(covered) >= MIN_SCOPE_METHODS:
        theirs = common_seeds(by_method, covered)
        if len(theirs) > len(seeds):
            return covered, theirs, f"the {len(covered)} methods with {len(theirs)} seeds"
    return names, seeds, "every method"


def paired_ranks(
    by_method: Mapping[str, tuple[Mapping[int, float], Mapping[int, int | None]]],
    higher_is_better: bool,
    alpha: float = ALPHA,
) -> tuple[dict[str, int], int]:
    """Ranks of the methods of one table from paired tests; and the number of seeds used.

    `by_method` maps a method to ({seed: value}, {seed: teacher seed}). The methods in
    `ranking_scope` are ranked (screens are left out, and get no rank), on the seeds they all
    have with the same teacher seed for all, so that every pair is compared on the same seeds;
    every pair gets a two-sided sign-flip test, Holm-corrected over the table's pairs, and a
    method's rank is 1 + the number of methods significantly better than it.
    """
    methods, agreed, _ = ranking_scope(by_method)
    beaten_by = dict.fromkeys(methods, 0)
    pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1 :]]
    if pairs and len(agreed) >= 2:
        diffs = np.asarray(
            [[by_method[a][0][s] - by_method[b][0][s] for s in agreed] for a, b in pairs]
        )
        p, _ = sign_flip_pvalues(diffs)
        adjusted = holm(p)
        means = diffs.mean(axis=1)
        for (a, b), p_adj, mean in zip(pairs, adjusted, means, strict=True):
            if p_adj < alpha and mean != 0:
                a_better = (mean > 0) == higher_is_better
                beaten_by[b if a_better else a] += 1
    return {m: 1 + beaten_by[m] for m in methods}, len(agreed)


def ci_ranks(
    frame: pd.DataFrame,
    seeds: pd.DataFrame,
    unranked: set[tuple[str, str, str]] | frozenset[tuple[str, str, str]] = frozenset(),
) -> pd.DataFrame:
    """`frame` (from `aggregate`) with `rank`, `rank_of`, `rank_seeds` and `screen` added.

    Ranks come from paired sign-flip tests on the per-seed values in `seeds` (see the module
    docstring), not from overlapping intervals: two methods whose intervals overlap because the
    seeds differ a lot can still differ consistently seed by seed. `rank_of` is the number of
    methods ranked, `rank_seeds` the number of seeds they were compared on. `screen` is true on a
    student row left unranked because it has fewer seeds than the methods ranked
    (`ranking_scope`). The (profile, dataset, metric) in `unranked` (metrics that fail a
    reliability check, `bench.report.reliability`; an `_excess` row follows its metric) get no
    rank.
    """
    frame = frame.copy()
    columns = {c: np.full(len(frame), math.nan) for c in ("rank", "rank_of", "rank_seeds")}
    screen = np.zeros(len(frame), dtype=bool)
    values, _ = student_values(seeds)
    eligible = (
        (frame.role == "student") & frame["mean"].notna() & frame.higher_is_better.notna()
    ).to_numpy()
    # Positions of the eligible rows per table, gathered in one pass (pandas lookups per row
    # would cost seconds on a default-profile result set).
    tables: dict[tuple[str, str, str], list[tuple[int, str, Any]]] = {}
    keys = zip(
        frame.profile, frame.dataset, frame.metric, frame.method, frame.higher_is_better,
        strict=True,
    )  # fmt: skip
    for position, (profile, dataset, metric, method, hib) in enumerate(keys):
        if eligible[position] and (
            (profile, dataset, metric.removesuffix(EXCESS_SUFFIX)) not in unranked
        ):
            tables.setdefault((profile, dataset, metric), []).append((position, method, hib))
    for key, rows in tables.items():
        by_method = values.get(key, {})
        present = {m: by_method[m] for _, m, _ in rows if m in by_method}
        ranks, n_seeds = paired_ranks(present, bool(rows[0][2]))
        for position, method, _ in rows:
            if method in ranks:
                columns["rank"][position] = ranks[method]
                columns["rank_of"][position] = len(ranks)
                columns["rank_seeds"][position] = n_seeds
            else:
                screen[position] = method in present
    for name, column in columns.items():
        frame[name] = column
    frame["screen"] = screen
    return frame


def decides(ranks: pd.DataFrame) -> bool:
    """Whether the ranks of one (profile, dataset, metric) tell some two students apart."""
    return bool((ranks["rank"] > 1).any())


def average_ranks(ranked: pd.DataFrame, seeds: pd.DataFrame) -> pd.DataFrame:
    """Mean rank per (profile, track, method, metric) over the datasets every averaged method ran.

    The datasets are those of the track where the metric was ranked and decided something (some
    student's rank above 1: a dataset where no paired test separates any two students gives every
    method rank 1, and averaging it in would pull decided ranks towards 1; a referee found image
    average ranks mixing concept_shapes' ten-seed ranks with digits' forced 1s). The averaged
    methods are those ranked on all of them. Their ranks are computed again among themselves on
    each dataset (`paired_ranks`) and averaged; `dataset_ranks` lists them. A method missing on some dataset
    gets a row with no `mean_rank` and a `note` naming the datasets it misses: averaging it over
    fewer datasets would compare it with the others on different ground.
    """
    values, _ = student_values(seeds)
    rows = []
    students = ranked[ranked["rank"].notna()]
    for (profile, modality, metric), part in students.groupby(
        ["profile", "modality", "metric"], sort=True
    ):
        datasets = sorted(d for d in part.dataset.unique() if decides(part[part.dataset == d]))
        if not datasets:
            separable = any(
                can_separate(rows.rank_seeds.max(), int(rows.rank_of.max()))
                for _, rows in part.groupby("dataset")
            )
            note = (
                "no dataset of the track separates any two students: no average rank"
                if separable
                else "too few shared seeds on every dataset of the track for a paired test, "
                "Holm-corrected over its pairs, to separate two students: no average rank"
            )
            rows += [
                {
                    "profile": profile, "modality": modality, "method": method, "metric": metric,
                    "mean_rank": math.nan, "n_datasets": 0, "dataset_ranks": "", "note": note,
                }
                for method in sorted(set(part.method))
            ]  # fmt: skip
            continue
        part = part[part.dataset.isin(datasets)]
        on = {d: set(part.method[part.dataset == d]) for d in datasets}
        common = set.intersection(*on.values())
        higher = bool(part.higher_is_better.iloc[0])
        per_dataset: dict[str, list[tuple[str, int]]] = {m: [] for m in common}
        for dataset in datasets:
            by_method = values.get((profile, dataset, metric), {})
            ranks, _ = paired_ranks({m: by_method[m] for m in common if m in by_method}, higher)
            for method, rank in ranks.items():
                per_dataset[method].append((dataset, rank))
        for method in sorted(set(part.method)):
            base = {"profile": profile, "modality": modality, "method": method, "metric": metric}
            if method in common:
                ranks_of = per_dataset[method]
                rows.append(
                    {
                        **base,
                        "mean_rank": float(np.mean([r for _, r in ranks_of])),
                        "n_datasets": len(ranks_of),
                        "dataset_ranks": ", ".join(f"{d} {r}" for d, r in ranks_of),
                        "note": "",
                    }
                )
            else:
                missing = [d for d in datasets if method not in on[d]]
                rows.append(
                    {
                        **base,
                        "mean_rank": math.nan,
                        "n_datasets": len(datasets) - len(missing),
                        "dataset_ranks": "",
                        "note": f"not ranked on {', '.join(missing)}: no average rank",
                    }
                )
    table = pd.DataFrame(rows, columns=AVERAGE_RANK_COLUMNS)
    return table.sort_values(
        ["profile", "modality", "metric", "mean_rank", "method"],
        ignore_index=True,
        na_position="last",
    )


# --- floors ---------------------------------------------------------------------------------------


def explanation_excess(seeds: pd.DataFrame) -> pd.DataFrame:
    """Rows `<metric>_excess`: each student's explanation agreement above the strongest floor.

    An agreement of 0.3 means nothing until one knows what an explainer that knows nothing scores:
    the control rows that are floors (`FLOOR_ROWS`: `random_explainer`, `permuted_teacher`,
    `untrained_student`, ...; not another teacher seed, a level) measure that floor with the same
    metric and teacher. For every student row (from
    `seed_values`) of a higher-is-better metric of category `explanation`
    (`expl_<spearman|topk|cosine>_<explainer>`), value − floor, where the floor is the largest
    control value of that metric on the same (profile, dataset) and teacher seed — the strongest
    floor, so that a positive excess beats every control. A control row's teacher seed is its
    `teacher_seed`, or its `seed` when the record names none (reference rows carry their teacher's
    seed). When no control row has the student's teacher seed (or the student names none), the
    floor is the mean over the dataset's teacher seeds of their strongest floors. Students with no
    control row on their dataset get no excess row. The rows have category `explanation_excess`
    and are higher-is-better, in the columns of `seed_values`.
    """
    higher = seeds.higher_is_better.map(lambda v: v is True or v == 1)
    explanation = seeds[(seeds.category == "explanation") & higher]
    controls = explanation[(explanation.role == "control") & explanation.method.isin(FLOOR_ROWS)]
    students = explanation[explanation.role == "student"]
    if controls.empty or students.empty:
        return pd.DataFrame(columns=SEED_COLUMNS).astype({"teacher_seed": "Int64"})
    control_teacher = controls.teacher_seed.astype("Float64").fillna(controls.seed.astype(float))
    floors = (
        controls.assign(floor_seed=control_teacher.astype(float))
        .groupby(["profile", "dataset", "metric", "floor_seed"])["value"]
        .max()
    )
    by_seed = floors.to_dict()
    fallback = floors.groupby(level=["profile", "dataset", "metric"]).mean().to_dict()
    rows = []
    for row in students.itertuples(index=False):
        teacher = _optional_int(row.teacher_seed)
        floor = None
        if teacher is not None:
            floor = by_seed.get((row.profile, row.dataset, row.metric, float(teacher)))
        if floor is None:
            floor = fallback.get((row.profile, row.dataset, row.metric))
        if floor is None:
            continue
        rows.append(
            {
                **row._asdict(),
                "metric": f"{row.metric}{EXCESS_SUFFIX}",
                "category": EXCESS_CATEGORY,
                "higher_is_better": True,
                "value": row.value - float(floor),
            }
        )
    frame = pd.DataFrame(rows, columns=SEED_COLUMNS)
    frame["teacher_seed"] = frame["teacher_seed"].astype("Int64")
    return frame
