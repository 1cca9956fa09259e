"""The catalogue: planning from it equals planning from the registries, its cache is trusted only
under the code's fingerprint, and the commands that read it answer without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from recordkit import make_record

from bench.core.atomic import write_json_atomic
from bench.core.vocabulary import REFERENCE_ROWS
from bench.plan import catalogue
from bench.plan.catalogue import Catalogue, code_fingerprint, from_registries
from bench.plan.planner import Selection, make_plan
from bench.results.folder import ResultsFolder
from bench.run.resume import FinishedRecords

PLUGIN = '''
from bench import Method, register_method


@register_method("{name}")
class Plugin(Method):
    """A plugin method for the catalogue tests."""

    defaults = {{"alpha": 0.5}}
'''


def round_trip(live: Catalogue) -> Catalogue:
    """The catalogue as a later command reads it back from its cache file."""
    return Catalogue.from_dict(json.loads(json.dumps(live.as_dict())))


@pytest.mark.parametrize(
    "selection",
    [
        Selection(profile="default"),
        Selection(profile="smoke", overrides=("kd.temperature=2", "fitnet.hint=last")),
        Selection(profile="default", datasets=("digits",), preset="paper"),
        Selection(profile="smoke", datasets=("fashion_mnist:80", "wine"), methods=("kd",)),
    ],
    ids=["default", "overrides", "preset", "family"],
)
def test_a_plan_from_the_cached_catalogue_equals_the_plan_from_the_registries(
    selection: Selection,
) -> None:
    live = from_registries()
    from_cache = make_plan(selection, round_trip(live))
    from_code = make_plan(selection)
    assert [r.run_id for r in from_cache.runs] == [r.run_id for r in from_code.runs]
    # Every field, parameters' types included: `run` executes the plan from the cache.
    assert from_cache.runs == from_code.runs
    assert from_cache.reference_ids == from_code.reference_ids
    assert round_trip(live) == live


def test_the_fingerprint_follows_the_bytes_of_plugin_files(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN.format(name="catalogue_plugin"))
    without = code_fingerprint()
    with_plugin = code_fingerprint([plugin])
    plugin.write_text(PLUGIN.format(name="catalogue_plugin").replace("0.5", "0.25"))
    assert len({without, with_plugin, code_fingerprint([plugin])}) == 3
    assert code_fingerprint() == without


def run_python(code: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter, as a user's command starts, with its own catalogue cache."""
    env = {**os.environ, catalogue.CACHE_ENV: str(cache)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )


RUN_CLI_REPORTING_TORCH = """
import sys
from bench.cli.main import main
code = main({argv!r})
print("torch imported:", "torch" in sys.modules)
sys.exit(code)
"""


def test_list_reads_the_cache_without_torch_once_it_is_built(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN.format(name="catalogue_plugin"))
    script = RUN_CLI_REPORTING_TORCH.format(argv=["list", "methods", "--plugin", str(plugin)])
    first = run_python(script, tmp_path / "cache", tmp_path)
    second = run_python(script, tmp_path / "cache", tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "torch imported: True" in first.stdout  # built from the registries
    assert "torch imported: False" in second.stdout  # read back
    assert first.stdout.splitlines()[:-1] == second.stdout.splitlines()[:-1]
    assert "catalogue_plugin" in second.stdout and "A plugin method" in second.stdout

    plugin.write_text(PLUGIN.format(name="renamed_plugin"))  # the code changed: rebuilt
    third = run_python(script, tmp_path / "cache", tmp_path)
    assert "torch imported: True" in third.stdout and "renamed_plugin" in third.stdout
    assert len(list((tmp_path / "cache").glob("catalogue-*.json"))) == 1  # the old one dropped


def test_a_torn_cache_file_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    script = RUN_CLI_REPORTING_TORCH.format(argv=["list", "datasets"])
    assert run_python(script, tmp_path / "cache", tmp_path).returncode == 0
    (cached,) = (tmp_path / "cache").glob("catalogue-*.json")
    cached.write_text(cached.read_text()[:100])
    again = run_python(script, tmp_path / "cache", tmp_path)
    assert again.returncode == 0 and "concept_shapes" in again.stdout
    assert "ignoring the catalogue cache" in again.stderr
    assert "torch imported: True" in again.stdout
    assert json.loads(cached.read_text())["fingerprint"] in cached.name


def test_an_edited_or_replaced_cache_file_is_rebuilt_not_believed(tmp_path: Path) -> None:
    script = RUN_CLI_REPORTING_TORCH.format(argv=["list", "methods"])
    assert run_python(script, tmp_path / "cache", tmp_path).returncode == 0
    (cached,) = (tmp_path / "cache").glob("catalogue-*.json")
    data = json.loads(cached.read_text())
    data["catalogue"]["methods"]["kd"]["defaults"] = "oops"  # valid JSON, the fingerprint kept
    cached.write_text(json.dumps(data))
    again = run_python(script, tmp_path / "cache", tmp_path)
    assert again.returncode == 0 and "does not match its digest" in again.stderr
    assert "torch imported: True" in again.stdout  # rebuilt from the registries
    # Resealed: the digest recomputed over the edit. The types are checked field by field.
    data = json.loads(cached.read_text())
    data["catalogue"]["methods"]["kd"]["defaults"] = "oops"
    data["catalogue"]["metrics"]["accuracy"]["bounds"] = ["0", 1]
    data["digest"] = catalogue._content_digest(data["catalogue"])
    cached.write_text(json.dumps(data))
    resealed = run_python(script, tmp_path / "cache", tmp_path)
    assert resealed.returncode == 0 and "kd" in resealed.stdout
    assert "'kd': defaults is not of type" in resealed.stderr
    assert "torch imported: True" in resealed.stdout
    cached.unlink()
    os.mkfifo(cached)  # a FIFO in its place: read without blocking, refused, rebuilt
    fifo = run_python(script, tmp_path / "cache", tmp_path)
    assert fifo.returncode == 0 and "not a regular file" in fifo.stderr


def finish(results: Path, selection: Selection) -> int:
    """Records of a finished suite: every run and reference row `ok` under its plan's run id."""
    plan = make_plan(selection)
    finished = FinishedRecords(ResultsFolder(results))
    for spec in plan.runs:
        record = make_record(spec.profile, spec.dataset, spec.variant, spec.seed, {})
        write_json_atomic(finished.folder.run_path(spec), {**record, "run_id": spec.run_id})
    for teacher in plan.teachers:
        for row in REFERENCE_ROWS:
            record = make_record(plan.profile.name, teacher.dataset, row, teacher.seed, {})
            path = finished.folder.reference_path(plan.profile.name, teacher, row)
            write_json_atomic(path, {**record, "run_id": plan.reference_ids[teacher.key]})
    assert not finished.stages(plan, finished.todo(plan))
    return len(plan.runs)


def test_a_rerun_of_a_finished_suite_answers_without_torch(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runs = finish(results, Selection(profile="default"))
    script = RUN_CLI_REPORTING_TORCH.format(argv=["run", "--all", "--results", str(results)])
    run_python(script, tmp_path / "cache", tmp_path)  # builds the cache
    rerun = run_python(script, tmp_path / "cache", tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{runs} runs ({runs} done)" in rerun.stdout
    assert "torch imported: False" in rerun.stdout
    status = run_python(
        RUN_CLI_REPORTING_TORCH.format(argv=["status", "--results", str(results)]),
        tmp_path / "cache",
        tmp_path,
    )
    assert f"{runs} runs: {runs} ok" in status.stdout and "torch imported: False" in status.stdout
