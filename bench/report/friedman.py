"""Friedman's test and the Nemenyi critical difference per dataset (Demšar 2006): whether a
dataset's students differ at all on a metric, and which mean ranks are too close to tell apart.

The leaderboard's ranks come from paired sign-flip tests between every two methods
(`bench.report.statistics.ci_ranks`). Demšar's procedure, the one the field reads, asks the
omnibus question first: with the seeds as blocks (the seeds every method has, each from the same
teacher, as the paired ranks use), each seed ranks the k methods (average ranks for ties, 1 best
by the metric's direction), and Friedman's χ² tests whether the mean ranks differ. Only where it
rejects at α = 0.05 are two methods whose mean ranks differ by more than the critical difference
CD = q_α √(k (k + 1) / (6 N)) called different (q_α: the studentized range's 1 − α quantile for k
groups and infinite degrees of freedom, over √2). `groups` lists the maximal sets of methods
within CD of each other, the bars of a CD diagram. Friedman's test is also the discrimination
check of `bench.report.reliability`. Caveat: the seeds are grouped by teacher (seed k learns from
teacher k mod 3), so the blocks are not fully independent; the test is conditional on the
listed teachers, as every paired test here is.

Screens (three seeds) and the claims' methods (twelve) share only three seeds, on which Friedman
can hardly reject; so the test takes the methods and seeds the ranks take
(`bench.report.statistics.ranking_scope`; `scope` says which), and the screens are not ranked
against the others.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.statistics import ALPHA, MIN_SCOPE_METHODS, StudentValues, ranking_scope

COLUMNS = [
    "profile", "dataset", "metric", "scope", "methods", "seeds", "chi2", "p_value", "differ",
    "critical_difference", "mean_ranks", "groups",
]  # fmt: skip


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """The Nemenyi critical difference of mean ranks for k methods on n blocks (Demšar 2006)."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n)))


def mean_ranks(matrix: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Each method's mean rank over the blocks (rows), 1 the best, ties averaged."""
    scores = -matrix if higher_is_better else matrix
    return stats.rankdata(scores, axis=1).mean(axis=0)


def cliques(names: list[str], ranks: np.ndarray, cd: float) -> list[list[str]]:
    """The maximal runs of methods, in rank order, whose mean ranks lie within `cd`."""
    order = np.argsort(ranks, kind="stable")
    runs: list[list[str]] = []
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and ranks[order[end + 1]] - ranks[order[start]] <= cd:
            end += 1
        run = [names[i] for i in order[start : end + 1]]
        if len(run) > 1 and not any(set(run) <= set(r) for r in runs):
            runs.append(run)
    return runs


def friedman_table(values: StudentValues, info: dict[tuple[str, str, str], tuple]) -> pd.DataFrame:
    """One row per (profile, dataset, metric) with a direction, ≥ 3 methods and ≥ 2 common seeds.

    `values`, `info`: `bench.report.statistics.student_values`.
    """
    rows = []
    for (profile, dataset, metric), by_method in sorted(values.items()):
        higher = info.get((profile, dataset, metric), (None, None, None))[2]
        if higher is None or pd.isna(higher) or len(by_method) < MIN_SCOPE_METHODS:
            continue
        names, seeds, scope = ranking_scope(by_method)
        if len(seeds) < 2:
            continue
        matrix = np.array([[by_method[m][0][s] for m in names] for s in seeds])
        if np.ptp(matrix, axis=1).max() == 0:
            chi2, p = math.nan, 1.0  # every seed ties every method
        else:
            result = stats.friedmanchisquare(*matrix.T)
            chi2, p = float(result.statistic), float(result.pvalue)
        ranks = mean_ranks(matrix, bool(higher))
        cd = critical_difference(len(names), len(seeds))
        differ = bool(p < ALPHA)
        order = np.argsort(ranks, kind="stable")
        rows.append(
            {
                "profile": profile,
                "dataset": dataset,
                "metric": metric,
                "scope": scope,
                "methods": len(names),
                "seeds": len(seeds),
                "chi2": chi2,
                "p_value": p,
                "differ": differ,
                "critical_difference": cd,
                "mean_ranks": "; ".join(f"{names[i]} {ranks[i]:.2f}" for i in order),
                "groups": " | ".join(", ".join(g) for g in cliques(names, ranks, cd))
                if differ
                else "all (Friedman does not reject)",
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
