"""How stable a claim's verdict is when its seeds are drawn again: a verdict that flips on a rerun
is not a result.

A rerun of the default suite once flipped two image verdicts against the committed reference set
(FINDINGS N17: a claim "mixed" where the reference had it inconclusive). The CPU kernels are now
pinned, so a rerun on the same kind of machine gives the same records; but another machine, or
other seeds, draw other students. So each claim's verdict is recomputed on `RESAMPLES` bootstrap
resamples of its seeds — drawn with replacement within each teacher seed, so that every teacher
keeps its share — and the share of resamples that give the same verdict is its stability. A
verdict that decides something (anything but inconclusive, not measured or too few seeds:
`NOT_DECIDING`) and holds in fewer than `STABLE` of the resamples is called `unstable` on the
site, with that share and its Monte Carlo standard error (`stability_error`).

What this asks, plainly: the share of resamples that repeat a verdict grows with how far its
p-values lie below α, so requiring 80 % works roughly like a stricter α (a test at p ≈ 0.005
repeats about that often); and a resample that draws a seed twice counts it twice, which makes
each resampled sign-flip test somewhat anti-conservative. It is a statement about how much a
verdict leans on a few seeds, not a second significance test.

The resamples draw the seeds of the claim's students of a (profile, dataset) together, so paired
comparisons stay paired; a seed drawn twice counts twice. Each (profile, dataset) draws from a
generator of its own, seeded by its name: its draws, and so a claim's stability, do not depend on
which other datasets the records hold (with one generator, adding the real datasets moved a
concept_shapes claim from 82 % to 79 %, across the 80 % line). Every resample's tests are the claim's
primary tests with their Holm families, as on the records themselves, except that above 16 seeds
their p-values take the sign-flip test's normal limit rather than 100 000 drawn sign patterns.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from bench.report.statistics import TOO_FEW_SEEDS, StudentValues

RESAMPLES = 1000
STABLE = 0.8
RESAMPLE_SEED = 0
# Verdicts that decide nothing, so none is called unstable (`bench.report.claims`' vocabulary).
NOT_DECIDING = frozenset({"inconclusive", "not measured", TOO_FEW_SEEDS})
Generators = Mapping[tuple[str, str], np.random.Generator]


def _strata(values: StudentValues) -> dict[tuple[str, str], dict[Any, list[int]]]:
    """(profile, dataset) → teacher seed → the student seeds distilled from it."""
    teacher_of: dict[tuple[str, str], dict[int, Any]] = {}
    for (profile, dataset, _), by_method in values.items():
        seen = teacher_of.setdefault((profile, dataset), {})
        for _, teachers in by_method.values():
            for seed, teacher in teachers.items():
                seen.setdefault(seed, teacher)
    strata: dict[tuple[str, str], dict[Any, list[int]]] = {}
    for key, seen in teacher_of.items():
        for seed in sorted(seen):
            strata.setdefault(key, {}).setdefault(seen[seed], []).append(seed)
    return strata


def generators(values: StudentValues, seed: int = RESAMPLE_SEED) -> dict:
    """One generator per (profile, dataset) of `values`, seeded by `seed` and its name."""
    keys = {key[:2] for key in values}
    return {key: np.random.default_rng([seed, zlib.crc32("/".join(key).encode())]) for key in keys}


def resample(values: StudentValues, rngs: Generators) -> dict:
    """`values` with each (profile, dataset)'s seeds drawn with replacement within each teacher
    seed, from its own generator in `rngs`; the drawn seeds are renumbered 0, 1, ... so that a
    seed drawn twice is two seeds."""
    drawn: dict[tuple[str, str], list[int]] = {}
    for key, by_teacher in _strata(values).items():
        rng = rngs[key]
        draws: list[int] = []
        for teacher in sorted(by_teacher, key=repr):
            seeds = by_teacher[teacher]
            draws += [seeds[i] for i in rng.integers(0, len(seeds), size=len(seeds))]
        drawn[key] = draws
    out: dict = {}
    for (profile, dataset, metric), by_method in values.items():
        draws = drawn.get((profile, dataset), [])
        out[profile, dataset, metric] = {
            method: (
                {k: seed_values[s] for k, s in enumerate(draws) if s in seed_values},
                {k: teachers[s] for k, s in enumerate(draws) if s in teachers},
            )
            for method, (seed_values, teachers) in by_method.items()
        }
    return out


def verdict_stability(
    verdict_of: Callable[[dict], str],
    values: StudentValues,
    verdict: str,
    resamples: int = RESAMPLES,
    seed: int = RESAMPLE_SEED,
) -> float:
    """The share of `resamples` bootstrap resamples of `values` whose `verdict_of` is `verdict`."""
    rngs = generators(values, seed)
    same = sum(verdict_of(resample(values, rngs)) == verdict for _ in range(resamples))
    return same / resamples


def stability_error(stability: float, resamples: int = RESAMPLES) -> float:
    """The Monte Carlo standard error of a share of `resamples` draws: √(s(1 − s) / R)."""
    return math.sqrt(stability * (1 - stability) / resamples)


def called(verdict: str, stability: float) -> str:
    """The verdict the site calls: `unstable` for a deciding verdict below `STABLE`."""
    if verdict in NOT_DECIDING or stability >= STABLE:
        return verdict
    return "unstable"
