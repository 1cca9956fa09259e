"""How much of each profile's plan the records hold: "runs done / planned" per dataset.

A reference set built over several sittings (the `real` profile takes CPU-hours) is published
before it is complete; the site then says, per dataset, how many of the profile's planned runs
have a record that finished ok, and lists the planned datasets without any record, so that
nothing missing is read as a result. A record whose run id is not the plan's current one (made
under settings or metrics since changed: `status` calls it stale) counts as done and is counted
again as stale, since the site shows it and a new `run` would redo it. Profiles the registry does
not know (an older or a plugin's) are not counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench.plan.catalogue import Catalogue
from bench.plan.planner import Selection, make_plan
from bench.plan.profiles import PROFILES
from bench.results.record import Record

# The order of the site's sections: the real-data reference first, then the embedded data.
PROFILE_ORDER = ("real", "default")


@dataclass(frozen=True)
class Completeness:
    """One dataset of a profile: per leaderboard row its (done, planned) student seeds, and the
    done runs recorded under another run id than the plan's (stale)."""

    profile: str
    dataset: str
    seeds: tuple[tuple[str, int, int], ...]
    stale: int = 0

    @property
    def done(self) -> int:
        """Planned student runs with a record that finished ok."""
        return sum(done for _, done, _ in self.seeds)

    @property
    def planned(self) -> int:
        return sum(planned for _, _, planned in self.seeds)

    @property
    def short(self) -> dict[str, str]:
        """row → "1 of 3 planned seeds done", for the rows with seeds still to run."""
        return {
            row: f"{done} of {planned} planned seeds done"
            for row, done, planned in self.seeds
            if done < planned
        }

    @property
    def complete(self) -> bool:
        return self.done >= self.planned

    @property
    def text(self) -> str:
        stale = f" ({self.stale} under earlier settings)" if self.stale else ""
        return f"{self.dataset}: {self.done} of {self.planned} planned runs done{stale}"


def profile_rank(profile: str) -> tuple[int, str]:
    """Sort key of a profile's sections: `PROFILE_ORDER` first, then by name."""
    order = PROFILE_ORDER.index(profile) if profile in PROFILE_ORDER else len(PROFILE_ORDER)
    return order, profile


def completeness(
    records: Iterable[Record], catalogue: Callable[[], Catalogue]
) -> list[Completeness]:
    """Per registered profile found in `records` and per dataset of its plan, done vs planned."""
    records = list(records)
    rows = []
    for profile in sorted({r.profile for r in records}, key=profile_rank):
        if profile not in PROFILES:
            continue
        done_ids = {
            (r.dataset_name, r.row, r.seed): r.run_id
            for r in records
            if r.profile == profile and r.ok
        }
        planned: Counter[tuple[str, str]] = Counter()
        done: Counter[tuple[str, str]] = Counter()
        stale: Counter[str] = Counter()
        for spec in make_plan(Selection(profile=profile), catalogue()).runs:
            key = (spec.dataset, spec.variant)
            planned[key] += 1
            found = done_ids.get((spec.dataset, spec.variant, spec.seed))
            done[key] += found is not None
            stale[spec.dataset] += found is not None and found != spec.run_id
        for dataset in dict.fromkeys(d for d, _ in planned):
            seeds = tuple((v, done[d, v], n) for (d, v), n in planned.items() if d == dataset)
            rows.append(Completeness(profile, dataset, seeds, stale[dataset]))
    return rows
