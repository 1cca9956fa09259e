"""A built-in method's or metric's computation never changes under the same version: its version
enters the run ids of what it computes, so raising it is what keeps an old record from being
reused (`tests/component_versions.py` says what a digest covers)."""

from __future__ import annotations

import pytest

from tests.component_versions import current, recorded, source_digest

CURRENT = current()
RECORDED = recorded()
RERECORD = "then record the digests: python -m tests.component_versions"


@pytest.mark.parametrize("name", sorted(CURRENT))
def test_a_changed_source_comes_with_a_raised_version(name: str) -> None:
    now = CURRENT[name]
    assert name in RECORDED, f"{name} is new: {RERECORD}"
    before = RECORDED[name]
    if now["source"] != before["source"]:
        assert now["version"] > before["version"], (
            f"the code of {name} changed and its version ({now['version']}) did not: raise it if "
            f"what it computes changed (its runs are then redone), {RERECORD}"
        )
    assert now == before, f"{name}'s version was raised from {before['version']}: {RERECORD}"


def test_nothing_recorded_is_gone() -> None:
    assert set(RECORDED) <= set(CURRENT), f"no longer registered: {set(RECORDED) - set(CURRENT)}"


def test_the_digest_sees_code_and_not_comments_or_docstrings() -> None:
    """The check above can fail: a changed constant changes the digest, a reworded docstring,
    comment or layout does not."""
    base = 'def f(x):\n    """Twice x."""\n    return 2 * x\n'
    assert source_digest([base]) == source_digest(
        ['def f(x):\n    """Two times x."""\n    # doubled\n    return 2*x\n']
    )
    assert source_digest([base]) != source_digest([base.replace("2 * x", "3 * x")])


def test_a_method_is_covered_through_the_class_it_inherits_from() -> None:
    """kd's temperature variants inherit kd's loss: a change to kd changes theirs too."""
    from bench.core import registry
    from bench.train.method import METHODS
    from tests.component_versions import _class_sources

    registry.load_builtins()
    kd_source = _class_sources(METHODS.get("kd"))[0]
    variant_sources = _class_sources(METHODS.get("kd_temperature_8"))
    assert kd_source in variant_sources


def test_a_raised_method_version_changes_the_run_id_and_the_first_keeps_it() -> None:
    """Version 1 adds nothing to the run id (so the reference sets' runs stay valid); any later
    version makes every run of the method a new run."""
    from dataclasses import replace

    from bench.plan.catalogue import load_catalogue
    from bench.plan.planner import Selection, make_plan

    plan = make_plan(Selection(datasets=("wine",), methods=("kd",), seeds=(0,)), load_catalogue())
    (spec,) = plan.runs
    assert spec.method_version == 1
    assert replace(spec, method_version=1).run_id == spec.run_id
    assert replace(spec, method_version=2).run_id != spec.run_id
