"""The same seed on the CPU gives the same numbers; another seed gives other numbers."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import read_records

ARGS = (
    "run", "--profile", "smoke", "--dataset", "wine", "digits", "--method", "scratch", "kd",
    "--device", "cpu",
)  # fmt: skip


def comparable_metrics(results: Path) -> dict[str, dict[str, float]]:
    """Every record's metrics except wall-clock ones, which differ between identical runs."""
    out = {}
    for path, record in read_records(results).items():
        timed = {n for n, meta in record["metric_metadata"].items() if meta["measures_time"]}
        out[path] = {k: v for k, v in record["metrics"].items() if k not in timed}
    return out


def test_same_seed_gives_identical_metrics(cli, tmp_path: Path) -> None:
    assert cli(*ARGS, "--results", tmp_path / "a").code == 0
    assert cli(*ARGS, "--results", tmp_path / "b").code == 0
    first, second = comparable_metrics(tmp_path / "a"), comparable_metrics(tmp_path / "b")
    assert len(first) == 18  # 2 datasets x (2 methods + teacher + 6 control rows)
    assert first == second


def test_another_seed_gives_other_numbers(cli, tmp_path: Path) -> None:
    base = ("run", "--profile", "smoke", "--dataset", "digits", "--method", "scratch")
    assert cli(*base, "--seeds", "0", "--results", tmp_path).code == 0
    assert cli(*base, "--seeds", "1", "--results", tmp_path).code == 0
    records = read_records(tmp_path)
    seed0 = records["smoke/digits/scratch/seed0.json"]["metrics"]
    seed1 = records["smoke/digits/scratch/seed1.json"]["metrics"]
    assert seed0["log_loss"] != seed1["log_loss"]
