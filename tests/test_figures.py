"""The report's figures: the Pareto front by hand, every figure written as well-formed SVG, and the
PNG tiles of the gallery decoded by an independent reader (Pillow)."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from PIL import Image

from bench.report.figures import (
    RDBU_R,
    Point,
    bar_chart,
    gallery,
    pareto_front,
    strip_plot,
    tradeoff_plot,
)
from bench.report.svg import nice_ticks, png

SVG = "{http://www.w3.org/2000/svg}"


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


def test_every_figure_is_written_as_svg(tmp_path: Path) -> None:
    points = [
        Point("teacher", "teacher", 1.0, 0.97),
        Point("kd", "student", 0.4, 0.9, 0.05, 0.01),
        Point("scratch", "student", 0.3, 0.88, math.nan, math.nan),
    ]
    paths = [
        tradeoff_plot(points, "expl_spearman_ig", "accuracy", tmp_path / "t.svg", floor_x=0.01),
        bar_chart(["teacher", "kd"], [30, 16], [math.nan, 2.5], ["teacher", "student"],
                  "concept detectors", tmp_path / "b.svg"),
        strip_plot(["kd", "scratch"], [[0.9, 0.91, 0.92], [0.88]], ["student", "student"],
                   "accuracy", tmp_path / "s.svg"),
        gallery(np.random.default_rng(0).random((4, 3, 8, 8)),
                [("teacher", np.ones((4, 1, 8, 8))), ("kd", -np.ones((4, 8, 8)))],
                "gradcam", tmp_path / "g.svg"),
    ]  # fmt: skip
    for path in paths:
        root = ElementTree.parse(path).getroot()
        assert root.tag == f"{SVG}svg" and float(root.get("width")) > 100, path.name
    texts = {t.text for t in ElementTree.parse(paths[0]).getroot().iter(f"{SVG}text")}
    assert {"teacher", "kd", "scratch", "Pareto front (students)"} <= texts
    assert "strongest control row (floor)" in texts
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, then renamed


def test_names_are_shown_as_typed(tmp_path: Path) -> None:
    # matplotlib read `$…$` as mathtext; in SVG a name is escaped text, whatever it holds.
    names = ["cost $5", "a$b$c", "<b>&"]
    path = bar_chart(names, [1.0, 2.0, 3.0], [0.1, 0.1, 0.1], ["student"] * 3, "price in $",
                     tmp_path / "bars.svg")  # fmt: skip
    texts = {t.text for t in ElementTree.parse(path).getroot().iter(f"{SVG}text")}
    assert set(names) | {"price in $"} <= texts


def test_the_gallery_tiles_decode_to_the_maps_colours(tmp_path: Path) -> None:
    inputs = np.linspace(0, 1, 2 * 8 * 8).reshape(2, 1, 8, 8)
    maps = np.zeros((2, 8, 8))
    maps[0, 0, 0], maps[0, 0, 1] = 2.0, -2.0  # the largest magnitudes: red and blue
    path = gallery(inputs, [("teacher", maps)], "ig", tmp_path / "g.svg")
    tiles = [Image.open(io.BytesIO(base64.b64decode(i.get("href").split(",", 1)[1])))
             for i in ElementTree.parse(path).getroot().iter(f"{SVG}image")]  # fmt: skip
    assert len(tiles) == 4 and all(t.size == (96, 96) for t in tiles)  # 8 px × 12
    grey = np.asarray(tiles[0].convert("RGB"))
    assert tuple(grey[0, 0]) == (0, 0, 0) and tuple(grey[-1, -1]) == (255, 255, 255)
    red_blue = np.asarray(tiles[2].convert("RGB"))
    assert tuple(red_blue[0, 0]) == tuple(RDBU_R[-1]) and tuple(red_blue[0, 12]) == tuple(RDBU_R[0])
    assert tuple(red_blue[50, 50]) == tuple(RDBU_R[5])  # 0: the middle of the map, white


def test_png_round_trips_through_an_independent_decoder() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    decoded = Image.open(io.BytesIO(png(pixels)))
    assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), pixels)


def test_ticks_are_round_numbers_inside_the_range() -> None:
    assert nice_ticks(0.0, 1.1) == ([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 1)
    assert nice_ticks(-0.25, 1.1) == ([-0.25, 0.0, 0.25, 0.5, 0.75, 1.0], 2)
    assert nice_ticks(0.0, 125.0) == ([0.0, 25.0, 50.0, 75.0, 100.0, 125.0], 0)
