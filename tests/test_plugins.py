"""Outside plugins: a file given with --plugin, the BENCH_PLUGINS variable, and entry points."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.core.registry import load_entry_points
from bench.train.method import METHODS
from tests.conftest import read_records

PLUGIN = Path(__file__).parent / "plugins" / "extra_method.py"


def test_plugin_file_method_runs_and_is_recorded(cli, tmp_path: Path) -> None:
    result = cli(
        "run", "--profile", "smoke", "--dataset", "wine", "--method", "soft_target",
        "--plugin", PLUGIN, "--results", tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.err
    record = read_records(tmp_path)["smoke/wine/soft_target/seed0.json"]
    assert record["status"] == "ok"
    assert record["method"]["citation"] == "Test plugin: distillation on soft targets alone."
    assert "loss/soft_ce" in record["training"]["history"]
    assert record["metrics"]["accuracy"] > 0.5


def test_plugins_from_the_environment_variable(cli, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_PLUGINS", str(PLUGIN))
    result = cli("list", "methods")
    assert result.code == 0
    assert "soft_target" in result.out


def test_plugins_from_entry_points(tmp_path: Path, monkeypatch) -> None:
    """A installed third-party package advertises its module under the `bench.methods` group."""
    (tmp_path / "thirdparty_kd.py").write_text(PLUGIN.read_text().replace("soft_target", "tp_soft"))
    dist = tmp_path / "thirdparty_kd-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-kd\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[bench.methods]\ntp_soft = thirdparty_kd\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "tp_soft" not in METHODS
    load_entry_points()
    assert "tp_soft" in METHODS


def test_a_method_name_cannot_be_registered_twice(tmp_path: Path, cli) -> None:
    clash = tmp_path / "clash.py"
    clash.write_text(
        "from bench import Method, register_method\n"
        "@register_method('kd')\n"
        "class Another(Method):\n"
        "    pass\n"
    )
    result = cli("list", "methods", "--plugin", clash)
    assert result.code == 2
    assert "method 'kd' is registered twice" in result.err


def test_the_teacher_row_name_is_reserved() -> None:
    from bench import Method, register_method

    with pytest.raises(ValueError, match="cannot name a method"):
        register_method("teacher")(type("T", (Method,), {}))


def test_editing_a_plugin_or_a_module_beside_it_makes_its_runs_stale(cli, tmp_path: Path) -> None:
    """The code of a plugin is part of its runs' identity: an edited loss is never reused."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "weights.py").write_text("WEIGHT = 1.0\n")
    plugin = folder / "weighted.py"
    plugin.write_text(
        PLUGIN.read_text()
        .replace('"soft_target"', '"weighted_soft"')
        .replace("import torch\n", "import torch\nfrom weights import WEIGHT\n")
        .replace('self.params["weight"] *', "WEIGHT *")
    )
    results = tmp_path / "results"
    run = ("run", "--profile", "smoke", "--dataset", "wine", "--method", "weighted_soft",
           "--plugin", plugin, "--results", results)  # fmt: skip
    status = ("status", "--profile", "smoke", "--plugin", plugin, "--results", results)
    assert cli(*run).code == 0
    first = read_records(results)["smoke/wine/weighted_soft/seed0.json"]
    assert first["method"]["code"]["file"] == str(plugin)
    assert "stale" not in cli(*status).out

    (folder / "weights.py").write_text("WEIGHT = 0.5\n")  # a module beside it, not the file
    assert "stale    wine/weighted_soft/seed0" in cli(*status).out
    again = cli(*run)
    assert again.code == 0 and "1 runs (1 done)" not in again.out  # redone, not reused
    second = read_records(results)["smoke/wine/weighted_soft/seed0.json"]
    assert second["run_id"] != first["run_id"]
    assert second["method"]["code"]["sha256"] != first["method"]["code"]["sha256"]
    assert "1 runs (1 done)" in cli(*run).out  # unchanged code: reused

    site = tmp_path / "site"
    assert cli("report", "--results", results, "--out", site).code == 0
    page = (site / "method-weighted_soft.html").read_text()
    assert f"plugin {plugin}, code SHA-256 <code>{second['method']['code']['sha256'][:16]}" in page
