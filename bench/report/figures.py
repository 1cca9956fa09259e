"""The report's figures, written as SVG (`bench.report.svg`): trade-off, bars, seeds, gallery.

Every figure is written atomically; the functions take plain numbers so that the report decides
what is plotted and the tests can check what is computed (the Pareto front, where labels go).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.core.atomic import write_atomic
from bench.core.vocabulary import RANDOM_CONTROL_ROW, REFERENCES
from bench.report.numbers import format_value
from bench.report.svg import ASCENT, DESCENT, Box, Drawing, nice_ticks, png, text_box, text_width

REFERENCE_COLOURS = {row.name: row.colour for row in REFERENCES}
STUDENT_COLOUR = "#d95f02"
FRONT_COLOUR = "#1b9e77"
GRID_COLOUR = "#dddddd"
SIZE = 11  # text, in pixels
LABEL_SIZE = 10.5  # the trade-off's point labels


@dataclass(frozen=True)
class Point:
    """A row of the leaderboard in two metrics: means and 95 % interval half-widths (NaN: none)."""

    name: str
    role: str
    x: float
    y: float
    x_err: float = math.nan
    y_err: float = math.nan


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Points no other point matches or beats in both x and y (both higher-is-better), by x.

    A point is dominated when another is at least as good in both coordinates and strictly better
    in one; exact duplicates both stay on the front.
    """
    front = []
    for p in points:
        dominated = any(
            q.x >= p.x and q.y >= p.y and (q.x > p.x or q.y > p.y) for q in points if q is not p
        )
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p.x, -p.y))


def _write(text: str, path: Path) -> Path:
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))
    return path


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


# Where a metric's values can lie: an interval drawn past them would show impossible values
# (accuracy 1.04, a negative count).
VALID_RANGES: tuple[tuple[str, tuple[float, float]], ...] = (
    ("expl_spearman_", (-1.0, 1.0)),
    ("expl_cosine_", (-1.0, 1.0)),
    ("expl_topk_", (0.0, 1.0)),
    ("accuracy", (0.0, 1.0)),
    ("macro_f1", (0.0, 1.0)),
    ("roc_auc", (0.0, 1.0)),
    ("teacher_agreement", (0.0, 1.0)),
    ("concept_detectors", (0.0, math.inf)),
    ("detectors_", (0.0, math.inf)),
    ("unique_concepts", (0.0, math.inf)),
)


def valid_range(metric: str) -> tuple[float, float]:
    """The values `metric` can take; unbounded when it is not listed in `VALID_RANGES`."""
    for prefix, bounds in VALID_RANGES:
        if metric.startswith(prefix) and not metric.endswith("_excess"):
            return bounds
    return (-math.inf, math.inf)


def clipped_error(value: float, half_width: float, bounds: tuple[float, float]) -> list[float]:
    """A symmetric interval's [below, above] error-bar lengths, cut at the metric's bounds."""
    half = _finite(half_width)
    low, high = bounds
    return [max(0.0, min(half, value - low)), max(0.0, min(half, high - value))]


# --- axes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axes:
    """A plot area in pixels and the data ranges it shows (y upwards, as in the data)."""

    frame: Box
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    def x(self, value: float) -> float:
        low, high = self.x_range
        return self.frame.x0 + (value - low) / (high - low) * (self.frame.x1 - self.frame.x0)

    def y(self, value: float) -> float:
        low, high = self.y_range
        return self.frame.y1 - (value - low) / (high - low) * (self.frame.y1 - self.frame.y0)


def _span(low: float, high: float, margin: float) -> tuple[float, float]:
    """[low, high] widened by `margin` of its span on each side (a point alone: ±0.5 or ±10 %)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return (0.0, 1.0)
    if high - low <= 1e-12 * max(1.0, abs(low)):
        half = 0.1 * abs(low) if low else 0.5
        return (low - half, high + half)
    pad = margin * (high - low)
    return (low - pad, high + pad)


def _y_axis(drawing: Drawing, axes: Axes, label: str) -> None:
    """Horizontal grid lines, y ticks and the y label (rotated, left of the tick labels)."""
    ticks, decimals = nice_ticks(*axes.y_range)
    widest = 0.0
    for value in ticks:
        y = axes.y(value)
        drawing.line(axes.frame.x0, y, axes.frame.x1, y, GRID_COLOUR, 0.8)
        drawing.line(axes.frame.x0 - 4, y, axes.frame.x0, y, "#222222", 0.8)
        text = f"{value:.{decimals}f}"
        drawing.text(axes.frame.x0 - 7, y + 0.35 * SIZE, text, SIZE, "end")
        widest = max(widest, text_width(text, SIZE))
    middle = (axes.frame.y0 + axes.frame.y1) / 2
    drawing.text(axes.frame.x0 - widest - 14, middle, label, SIZE, "middle", rotate=-90)


def _x_axis(drawing: Drawing, axes: Axes, label: str) -> None:
    ticks, decimals = nice_ticks(*axes.x_range)
    for value in ticks:
        x = axes.x(value)
        drawing.line(x, axes.frame.y0, x, axes.frame.y1, GRID_COLOUR, 0.8)
        drawing.line(x, axes.frame.y1, x, axes.frame.y1 + 4, "#222222", 0.8)
        drawing.text(x, axes.frame.y1 + 7 + ASCENT * SIZE, f"{value:.{decimals}f}", SIZE, "middle")
    middle = (axes.frame.x0 + axes.frame.x1) / 2
    drawing.text(middle, axes.frame.y1 + 30 + ASCENT * SIZE, label, SIZE, "middle")


def _names_below(drawing: Drawing, axes: Axes, names: Sequence[str]) -> None:
    """One name per slot under the axes, turned 30° so that long names do not collide."""
    for i, name in enumerate(names):
        x = axes.x(i)
        drawing.line(x, axes.frame.y1, x, axes.frame.y1 + 4, "#222222", 0.8)
        drawing.text(x + 3, axes.frame.y1 + 8 + 0.7 * SIZE, name, SIZE, "end", rotate=-30)


def _frame(drawing: Drawing, axes: Axes) -> None:
    f = axes.frame
    drawing.rect(f.x0, f.y0, f.x1 - f.x0, f.y1 - f.y0, stroke="#222222")


def _error_bar(
    drawing: Drawing, axes: Axes, value: float, err: list[float], at: float, colour: str,
    horizontal: bool,
) -> None:  # fmt: skip
    """An interval [value − below, value + above] with caps, at `at` on the other axis."""
    below, above = err
    if below == 0 and above == 0:
        return
    if horizontal:
        y = axes.y(at)
        x0, x1 = axes.x(value - below), axes.x(value + above)
        drawing.line(x0, y, x1, y, colour, 0.8)
        for x in (x0, x1):
            drawing.line(x, y - 3, x, y + 3, colour, 0.8)
    else:
        x = axes.x(at)
        y0, y1 = axes.y(value - below), axes.y(value + above)
        drawing.line(x, y0, x, y1, colour, 0.8)
        for y in (y0, y1):
            drawing.line(x - 3, y, x + 3, y, colour, 0.8)


# --- the trade-off: labels that overlap nothing -------------------------------------------------

# Label positions tried around a point, nearest first (offsets in pixels, y up): the first whose
# box overlaps no other label, marker or the legend, and stays inside the axes, is taken.
LABEL_OFFSETS = tuple(
    (round(r * math.cos(a)), round(r * math.sin(a)))
    for r in (8, 18, 32, 48)
    for a in (math.radians(d) for d in (30, -30, 150, -150, 90, -90, 0, 180))
)
MARKER_BOX = 5.0  # half the side of the box a marker keeps clear of labels
LEADER = 26  # offsets farther than this (|dx| + |dy|) get a line to their point


@dataclass(frozen=True)
class Label:
    """A point's name set at (x, y) (its baseline), anchored at its start or end."""

    name: str
    x: float
    y: float
    anchor: str
    box: Box
    point: tuple[float, float]

    @property
    def leader(self) -> bool:
        return abs(self.x - self.point[0]) + abs(self.y - self.point[1]) > LEADER


def place_labels(
    names: Sequence[str],
    anchors: Sequence[tuple[float, float]],
    frame: Box,
    obstacles: Sequence[Box] = (),
    size: float = LABEL_SIZE,
) -> tuple[list[Label], list[int]]:
    """A label per point (pixel `anchors`) where its box overlaps no other label, no other
    point's marker and no obstacle (the legend), inside `frame`; and the indices of the points
    that fit nowhere near, which go to a key beside the axes instead, so no two labels overlap."""
    markers = [Box(x - MARKER_BOX, y - MARKER_BOX, x + MARKER_BOX, y + MARKER_BOX)
               for x, y in anchors]  # fmt: skip
    taken: list[Box] = list(obstacles)
    labels: list[Label] = []
    unplaced: list[int] = []
    for index, (name, (px, py)) in enumerate(zip(names, anchors, strict=True)):
        others = taken + markers[:index] + markers[index + 1 :]
        for dx, dy in LABEL_OFFSETS:
            anchor = "start" if dx >= 0 else "end"
            # Above the point's level the text sits on its baseline, below it hangs from its top.
            baseline = py - dy - DESCENT * size if dy >= 0 else py - dy + ASCENT * size
            box = text_box(name, px + dx, baseline, size, anchor).padded(1)
            if box.within(frame) and not any(box.overlaps(o) for o in others):
                taken.append(box)
                labels.append(Label(name, px + dx, baseline, anchor, box, (px, py)))
                break
        else:
            unplaced.append(index)
    return labels, unplaced


def overlapping_labels(labels: Sequence[Label]) -> list[tuple[str, str]]:
    """Pairs of labels whose boxes overlap (the check `place_labels` makes)."""
    return [(a.name, b.name) for i, a in enumerate(labels) for b in labels[i + 1 :]
            if a.box.overlaps(b.box)]  # fmt: skip


def _legend(
    axes: Axes, entries: list[tuple[str, str, str | None]], anchors: Sequence[tuple[float, float]]
) -> Box:
    """Where the legend goes: the corner of the axes it hides fewest points in (upper right
    first on a tie)."""
    width = 34 + max(text_width(text, SIZE) for text, _, _ in entries)
    height = 8 + 17 * len(entries)
    f = axes.frame
    corners = [
        Box(f.x1 - 6 - width, f.y0 + 6, f.x1 - 6, f.y0 + 6 + height),
        Box(f.x0 + 6, f.y0 + 6, f.x0 + 6 + width, f.y0 + 6 + height),
        Box(f.x0 + 6, f.y1 - 6 - height, f.x0 + 6 + width, f.y1 - 6),
        Box(f.x1 - 6 - width, f.y1 - 6 - height, f.x1 - 6, f.y1 - 6),
    ]

    def hidden(box: Box) -> int:
        return sum(box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1 for x, y in anchors)

    return min(corners, key=hidden)


def tradeoff_plot(
    points: Sequence[Point],
    x_label: str,
    y_label: str,
    path: Path,
    floor_x: float | None = None,
) -> Path:
    """Accuracy against explanation agreement, with the students' Pareto front drawn as steps.

    `floor_x`, the strongest control row's agreement (random attributions, the teacher's
    explanation of another sample, an untrained student), is drawn as a dashed line: what an
    explanation must beat to agree with the teacher about this sample at all.
    """
    x_bounds, y_bounds = valid_range(x_label), valid_range(y_label)
    x_errors = [clipped_error(p.x, p.x_err, x_bounds) for p in points]
    y_errors = [clipped_error(p.y, p.y_err, y_bounds) for p in points]
    floor = floor_x if floor_x is not None and math.isfinite(floor_x) else None
    xs = [p.x - e[0] for p, e in zip(points, x_errors, strict=True)]
    xs += [p.x + e[1] for p, e in zip(points, x_errors, strict=True)]
    xs += [floor] if floor is not None else []
    ys = [p.y - e[0] for p, e in zip(points, y_errors, strict=True)]
    ys += [p.y + e[1] for p, e in zip(points, y_errors, strict=True)]
    axes = Axes(Box(0, 0, 560, 360), _span(min(xs), max(xs), 0.12), _span(min(ys), max(ys), 0.12))
    drawing = Drawing()
    _y_axis(drawing, axes, f"{y_label} (↑)")
    _x_axis(drawing, axes, f"{x_label} (↑)")
    entries: list[tuple[str, str, str | None]] = []
    if floor is not None:
        x = axes.x(floor)
        drawing.line(x, axes.frame.y0, x, axes.frame.y1, REFERENCE_COLOURS[RANDOM_CONTROL_ROW],
                     1.0, dash="5 3")  # fmt: skip
        entries.append(
            ("strongest control row (floor)", REFERENCE_COLOURS[RANDOM_CONTROL_ROW], "5 3")
        )
    for p, x_err, y_err in zip(points, x_errors, y_errors, strict=True):
        colour = REFERENCE_COLOURS.get(p.name, STUDENT_COLOUR)
        _error_bar(drawing, axes, p.x, x_err, p.y, colour, horizontal=True)
        _error_bar(drawing, axes, p.y, y_err, p.x, colour, horizontal=False)
    front = pareto_front([p for p in points if p.role == "student"])
    if front:
        steps = [(axes.x(front[0].x), axes.y(front[0].y))]
        for p in front[1:]:
            # Steps: moving right along the front never gains accuracy.
            steps += [(axes.x(p.x), steps[-1][1]), (axes.x(p.x), axes.y(p.y))]
        drawing.polyline(steps, FRONT_COLOUR, 1.5)
        entries.append(("Pareto front (students)", FRONT_COLOUR, None))
    anchors = [(axes.x(p.x), axes.y(p.y)) for p in points]
    for p, (x, y) in zip(points, anchors, strict=True):
        colour = REFERENCE_COLOURS.get(p.name, STUDENT_COLOUR)
        if p.role == "teacher":
            drawing.star(x, y, 8, colour)
        else:
            drawing.circle(x, y, 4, colour)
    obstacles = []
    if entries:
        legend = _legend(axes, entries, anchors)
        obstacles.append(legend)
        drawing.rect(legend.x0, legend.y0, legend.x1 - legend.x0, legend.y1 - legend.y0,
                     "#ffffff", stroke="#cccccc", opacity=0.85)  # fmt: skip
        for i, (text, colour, dash) in enumerate(entries):
            y = legend.y0 + 12 + 17 * i
            drawing.line(legend.x0 + 6, y, legend.x0 + 28, y, colour, 1.5, dash=dash)
            drawing.text(legend.x0 + 34, y + 0.35 * SIZE, text, SIZE)
    labels, unplaced = place_labels([p.name for p in points], anchors, axes.frame, obstacles)
    for label in labels:
        if label.leader:
            drawing.line(*label.point, label.x, label.y - 0.3 * LABEL_SIZE, "#999999", 0.5)
        drawing.text(label.x, label.y, label.name, LABEL_SIZE, label.anchor, css="label")
    for row, index in enumerate(unplaced):
        p = points[index]
        drawing.text(axes.frame.x1 + 10, axes.frame.y0 + 10 + 14 * row,
                     f"{p.name}: ({format_value(p.x)}, {format_value(p.y)})", 10, css="key")  # fmt: skip
    _frame(drawing, axes)
    return _write(drawing.svg(), path)


# --- bars and seeds ---------------------------------------------------------------------------------


def _colour(name: str, role: str) -> str:
    return REFERENCE_COLOURS.get(name, STUDENT_COLOUR) if role != "student" else STUDENT_COLOUR


def _slots(count: int) -> Box:
    """The plot area of a figure with one slot per row, 52 px each."""
    return Box(0, 0, max(300, 52 * count), 250)


def bar_chart(
    names: Sequence[str],
    means: Sequence[float],
    errors: Sequence[float],
    roles: Sequence[str],
    label: str,
    path: Path,
    metric: str = "",
) -> Path:
    """One bar per row (teacher first) with its 95 % interval half-width as an error bar, cut at
    the values `metric` can take."""
    bounds = valid_range(metric)
    clipped = [clipped_error(m, e, bounds) for m, e in zip(means, errors, strict=True)]
    low = min([0.0, *(m - c[0] for m, c in zip(means, clipped, strict=True))])
    high = max([0.0, *(m + c[1] for m, c in zip(means, clipped, strict=True))])
    top = high + 0.05 * (high - low) if high > low else 1.0
    axes = Axes(_slots(len(names)), (-0.6, len(names) - 0.4), (low, top))
    drawing = Drawing()
    _y_axis(drawing, axes, label)
    zero = axes.y(0.0)
    for i, (name, mean, role, err) in enumerate(zip(names, means, roles, clipped, strict=True)):
        x0, x1 = axes.x(i - 0.4), axes.x(i + 0.4)
        y = axes.y(mean)
        drawing.rect(x0, min(y, zero), x1 - x0, abs(zero - y), _colour(name, role))
        _error_bar(drawing, axes, mean, err, i, "#222222", horizontal=False)
    _names_below(drawing, axes, names)
    _frame(drawing, axes)
    return _write(drawing.svg(), path)


def strip_plot(
    names: Sequence[str], values: Sequence[Sequence[float]], roles: Sequence[str], label: str,
    path: Path,
) -> Path:  # fmt: skip
    """Every seed's value as a dot per row, spread sideways, with the mean as a short bar."""
    arrays = [np.asarray(v, dtype=float) for v in values]
    everything = np.concatenate([a for a in arrays if len(a)] or [np.zeros(1)])
    axes = Axes(_slots(len(names)), (-0.6, len(names) - 0.4),
                _span(float(everything.min()), float(everything.max()), 0.06))  # fmt: skip
    drawing = Drawing()
    _y_axis(drawing, axes, f"{label} per seed")
    for i, (name, vals, role) in enumerate(zip(names, arrays, roles, strict=True)):
        if not len(vals):
            continue
        # Fixed offsets instead of random jitter: the same records give the same picture.
        offsets = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else np.zeros(1)
        colour = _colour(name, role)
        for offset, value in zip(offsets, vals, strict=True):
            drawing.circle(axes.x(i + offset), axes.y(value), 3.5, colour, opacity=0.8)
        mean = axes.y(float(vals.mean()))
        drawing.line(axes.x(i - 0.25), mean, axes.x(i + 0.25), mean, "#222222", 1.5)
    _names_below(drawing, axes, names)
    _frame(drawing, axes)
    return _write(drawing.svg(), path)


# --- the gallery ------------------------------------------------------------------------------------

CELL = 96  # pixels per map
GAP = 8
# matplotlib's RdBu_r (ColorBrewer's RdBu, reversed): blue for negative, white at 0, red positive.
RDBU_R = np.array(
    [[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240],
     [247, 247, 247], [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43],
     [103, 0, 31]], dtype=float,
)  # fmt: skip


def _scaled(image: np.ndarray) -> np.ndarray:
    """Values min-max scaled to [0, 1] (a constant image: 0)."""
    span = float(image.max() - image.min())
    return (image - image.min()) / (span if span > 0 else 1.0)


def _input_tile(x: np.ndarray) -> np.ndarray:
    """A CHW image as RGB bytes: grey for one channel, min-max scaled colour for three."""
    if x.shape[0] == 1:
        return np.repeat((_scaled(x[0].astype(float)) * 255).round()[..., None], 3, axis=-1)
    return (_scaled(np.moveaxis(x[:3], 0, -1).astype(float)) * 255).round()


def _map_tile(amap: np.ndarray) -> np.ndarray:
    """An attribution map (summed over channels) in RdBu_r, scaled to its largest magnitude."""
    amap = np.asarray(amap, dtype=float)
    amap = amap.sum(axis=0) if amap.ndim == 3 else amap
    bound = float(np.abs(amap).max()) or 1.0
    t = np.clip((amap / bound + 1) / 2, 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(RDBU_R))
    return np.stack([np.interp(t, stops, RDBU_R[:, c]) for c in range(3)], axis=-1).round()


def _tile(rgb: np.ndarray) -> tuple[bytes, float, float]:
    """A tile as PNG bytes, its pixels repeated to about `CELL` wide; and its shown size."""
    height, width = rgb.shape[:2]
    factor = max(1, math.ceil(CELL / max(height, width)))
    pixels = np.repeat(np.repeat(rgb.astype(np.uint8), factor, axis=0), factor, axis=1)
    scale = CELL / max(height, width)
    return png(pixels), width * scale, height * scale


def gallery(
    inputs: np.ndarray | None,
    rows: Sequence[tuple[str, np.ndarray]],
    explainer: str,
    path: Path,
) -> Path:
    """Inputs on top, then one row of attribution maps per model, on the same test images.

    Maps are summed over channels (as the agreement metrics do) and each is scaled to its own
    largest magnitude, red positive and blue negative, so patterns compare, not magnitudes.
    """
    labelled = ([("input", inputs)] if inputs is not None else []) + list(rows)
    n_cols = max(len(arrays) for _, arrays in labelled)
    drawing = Drawing()
    width = n_cols * (CELL + GAP) - GAP
    drawing.text(width / 2, 0, f"{explainer} attributions on the same test images", SIZE, "middle")
    for r, (name, arrays) in enumerate(labelled):
        top = 10 + r * (CELL + GAP)
        drawing.text(-8, top + CELL / 2 + 0.35 * SIZE, name, SIZE, "end")
        for c, array in enumerate(arrays):
            is_input = inputs is not None and r == 0
            picture, w, h = _tile(_input_tile(array) if is_input else _map_tile(array))
            x = c * (CELL + GAP)
            drawing.image(x, top, w, h, picture)
            drawing.rect(x, top, w, h, stroke="#222222")
    return _write(drawing.svg(), path)
