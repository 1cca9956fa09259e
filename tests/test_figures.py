"""The report's figures: the Pareto front by hand, and every figure written as a real PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench.report.figures import Point, bar_chart, gallery, pareto_front, strip_plot, tradeoff_plot

PNG = b"\x89PNG\r\n\x1a\n"


def test_pareto_front_keeps_exactly_the_undominated_points() -> None:
    points = [
        Point("a", "student", x=0.2, y=0.95),  # most accurate
        Point("b", "student", x=0.6, y=0.90),  # a trade-off
        Point("c", "student", x=0.5, y=0.85),  # dominated by b
        Point("d", "student", x=0.9, y=0.70),  # best agreement
        Point("e", "student", x=0.9, y=0.60),  # dominated by d (same x, lower y)
        Point("f", "student", x=0.6, y=0.90),  # b's twin: neither dominates the other
    ]
    assert [p.name for p in pareto_front(points)] == ["a", "b", "f", "d"]  # sorted by agreement


def test_every_figure_is_written_as_png(tmp_path: Path) -> None:
    points = [
        Point("teacher", "teacher", 1.0, 0.97),
        Point("kd", "student", 0.4, 0.9, 0.05, 0.01),
        Point("scratch", "student", 0.3, 0.88, math.nan, math.nan),
    ]
    paths = [
        tradeoff_plot(points, "expl_spearman_ig", "accuracy", tmp_path / "t.png", floor_x=0.01),
        bar_chart(["teacher", "kd"], [30, 16], [math.nan, 2.5], ["teacher", "student"],
                  "concept detectors", tmp_path / "b.png"),
        strip_plot(["kd", "scratch"], [[0.9, 0.91, 0.92], [0.88]], ["student", "student"],
                   "accuracy", tmp_path / "s.png"),
        gallery(np.random.default_rng(0).random((4, 3, 8, 8)),
                [("teacher", np.ones((4, 1, 8, 8))), ("kd", -np.ones((4, 8, 8)))],
                "gradcam", tmp_path / "g.png"),
    ]  # fmt: skip
    for path in paths:
        assert path.read_bytes()[:8] == PNG
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, then renamed
