"""Bad usage gets one clear line naming the valid choices, and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli.main import main


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--dataset", "nope"), "unknown dataset 'nope'; valid datasets: adult, breast_cancer, "),
        (("--method", "nope"), "unknown method 'nope'; valid methods: "),
        (
            ("--all", "--profile", "nope"),
            "unknown profile 'nope'; valid profiles: cifar100, cifar100-resnet110-resnet20, "
            "cifar100-resnet32x4-shufflenetv1, cifar100-resnet56-resnet20, cifar100-vgg13-vgg8, "
            "cifar100-wrn_40_2-wrn_16_2, default, full, real, smoke",
        ),
        (
            ("--all", "--set", "kd.nope=1"),
            "has no parameter 'nope'; its parameters: alpha, standardise, temperature",
        ),
        (("--all", "--set", "kd.temperature=hot"), "expected a float like 4.0"),
        (
            ("--all", "--set", "fitnet.hint=bogus"),
            "fitnet.hint='bogus': valid values are middle, last",
        ),
        (("--all", "--set", "kd=1"), "expected METHOD.PARAM=VALUE"),
        (("--all", "--set", "nope.x=1"), "unknown method 'nope'"),
        (("--method", "scratch", "--set", "kd.alpha=0.1"), "not among those selected"),
        ((), "say what to run: --all"),
        (("--dataset", "digits", "--method", "nope2"), "valid methods: "),
    ],
)
def test_bad_run_arguments_exit_2_with_the_valid_names(cli, tmp_path, args, expected) -> None:
    result = cli("run", *args, "--results", tmp_path)
    assert result.code == 2
    assert expected in result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "runs").exists()


def test_unknown_method_lists_every_registered_method(cli, tmp_path) -> None:
    err = cli("run", "--method", "nope", "--results", tmp_path).err
    for name in ("kd", "label_smoothing", "scratch"):
        assert name in err


def test_plugin_with_a_syntax_error_names_file_and_line(cli, tmp_path: Path) -> None:
    plugin = tmp_path / "bad_plugin.py"
    plugin.write_text("import torch\n\ndef broken(:\n    pass\n")
    result = cli("list", "methods", "--plugin", plugin)
    assert result.code == 2
    assert f"plugin file {plugin}, line 3" in result.err


def test_plugin_that_raises_on_import_names_file_and_line(cli, tmp_path: Path) -> None:
    plugin = tmp_path / "raising_plugin.py"
    plugin.write_text("x = 1\nraise ValueError('bad config')\n")
    result = cli("list", "methods", "--plugin", plugin)
    assert result.code == 2
    assert "raising_plugin.py, line 2: ValueError: bad config" in result.err


def test_missing_plugin_file(cli, tmp_path: Path) -> None:
    result = cli("list", "methods", "--plugin", tmp_path / "absent.py")
    assert result.code == 2 and "does not exist" in result.err


def test_unwritable_results_folder(cli, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli("run", "--all", "--profile", "smoke", "--results", blocker / "results")
    assert result.code == 2
    assert "is not writable" in result.err


def test_unknown_list_kind_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "widgets"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'widgets'" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["methods", "datasets", "metrics", "profiles"])
def test_list_names_every_registered_component(cli, kind: str) -> None:
    from bench.data.bundle import DATASETS
    from bench.metrics import METRICS
    from bench.plan.profiles import PROFILES
    from bench.train.method import METHODS

    registry = {"methods": METHODS, "datasets": DATASETS, "metrics": METRICS, "profiles": PROFILES}
    result = cli("list", kind)
    assert result.code == 0
    # Indented lines detail the item above them (a profile's per-dataset method lists).
    listed = {line.split()[0] for line in result.out.splitlines() if not line.startswith(" ")}
    assert listed == set(registry[kind].names())
    if kind == "profiles":
        assert "concept_shapes: only scratch, label_smoothing, kd, e2kd" in result.out


def test_status_counts_missing_runs(cli, tmp_path: Path) -> None:
    result = cli("status", "--profile", "smoke", "--results", tmp_path)
    assert result.code == 0
    assert "runs: " in result.out and " missing" in result.out


def test_report_without_results_explains_what_to_do(cli, tmp_path: Path) -> None:
    result = cli("report", "--results", tmp_path)
    assert result.code == 2 and "run `python -m bench run --all` first" in result.err


def test_set_override_makes_a_variant_row(cli, tmp_path: Path) -> None:
    result = cli(
        "run", "--profile", "smoke", "--dataset", "wine", "--method", "kd",
        "--set", "kd.temperature=2", "--results", tmp_path,
    )  # fmt: skip
    assert result.code == 0
    import json

    path = tmp_path / "runs" / "smoke" / "wine" / "kd[temperature=2.0]" / "seed0.json"
    record = json.loads(path.read_text())
    assert record["method"]["name"] == "kd[temperature=2.0]"
    assert record["method"]["base"] == "kd"
    assert record["method"]["params"] == {"alpha": 0.5, "temperature": 2.0}
