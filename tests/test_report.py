"""The leaderboard CSV and the first report page: correct numbers, teacher row, escaped strings."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.leaderboard import aggregate, t_interval
from bench.report import render_report
from bench.store import iter_records


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("report")
    args = ["run", "--profile", "smoke", "--dataset", "wine", "--seeds", "0", "1", "--method"]
    args += ["scratch", "label_smoothing", "kd"]
    assert main([*args, "--results", str(results)]) == 0
    return results


def copy_of(results: Path, tmp_path: Path) -> Path:
    target = tmp_path / "results"
    shutil.copytree(results, target)
    return target


def test_leaderboard_rows_are_mean_std_ci_over_seeds(two_seeds: Path) -> None:
    render_report(two_seeds, two_seeds.parent / "site")
    table = pd.read_csv(two_seeds / "leaderboard.csv")
    values = [
        json.loads((two_seeds / f"runs/smoke/wine/kd/seed{s}.json").read_text())["metrics"][
            "log_loss"
        ]
        for s in (0, 1)
    ]
    row = table[(table.method == "kd") & (table.metric == "log_loss")].iloc[0]
    assert row["n"] == 2
    assert row["mean"] == pytest.approx(np.mean(values))
    assert row["std"] == pytest.approx(np.std(values, ddof=1))
    low, high = t_interval(np.asarray(values))
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((low, high))
    teacher = table[(table.method == "teacher") & (table.metric == "accuracy")].iloc[0]
    assert teacher["role"] == "teacher" and teacher["n"] == 1
    exported = json.loads((two_seeds / "leaderboard.json").read_text())["rows"]
    assert len(exported) == len(table)


def test_t_interval_by_hand() -> None:
    low, high = t_interval(np.array([1.0, 2.0, 3.0]))
    # mean 2, sd 1, n 3, t(0.975, 2) = 4.302653
    assert (low, high) == pytest.approx((2 - 4.302653 / 3**0.5, 2 + 4.302653 / 3**0.5), rel=1e-6)
    assert all(np.isnan(t_interval(np.array([1.0]))))


def test_index_has_a_table_per_dataset_with_teacher_row(two_seeds: Path, tmp_path: Path) -> None:
    index = render_report(two_seeds, tmp_path / "site")
    html = index.read_text()
    assert "<h2>wine" in html
    assert '<tr class="teacher"><td class="method">teacher</td>' in html
    for method in ("scratch", "label_smoothing", "kd"):
        assert f'<td class="method">{method}</td>' in html
    frame = aggregate(iter_records(two_seeds))
    acc = frame[(frame.method == "kd") & (frame.metric == "accuracy")].iloc[0]
    assert f"{acc['mean']:.4g} ± {acc['std']:.4g}" in html
    assert "accuracy ↑" in html and "log_loss ↓" in html
    assert "http://" not in html and "https://" not in html


def test_markup_in_names_is_escaped(two_seeds: Path, tmp_path: Path) -> None:
    results = copy_of(two_seeds, tmp_path)
    path = results / "runs/smoke/wine/kd/seed0.json"
    record = json.loads(path.read_text())
    record["method"]["name"] = "<script>alert(1)</script>"
    path.write_text(json.dumps(record))
    html = render_report(results, tmp_path / "site").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_corrupt_and_foreign_files_are_skipped_with_a_warning(
    two_seeds: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = copy_of(two_seeds, tmp_path)
    (results / "runs/smoke/wine/kd/seed0.json").write_text('{"truncated": ')
    (results / "runs/smoke/wine/notes.json").write_text('{"hello": "world"}')
    with caplog.at_level(logging.WARNING):
        html = render_report(results, tmp_path / "site").read_text()
    assert "kd/seed0.json" in caplog.text and "notes.json" in caplog.text
    assert '<td class="method">kd</td>' in html  # seed 1 still counts
