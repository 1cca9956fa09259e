"""The report's figures, drawn with matplotlib's object API (no pyplot state, no GUI backend).

Every figure is a PNG written atomically; the functions take plain numbers so that the report
decides what is plotted and the tests can check what is computed (e.g. the Pareto front).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from bench.core.atomic import write_atomic
from bench.core.vocabulary import CONTROL_ROWS, RANDOM_CONTROL_ROW, TEACHER_ROW

DPI = 96
REFERENCE_COLOURS = {TEACHER_ROW: "#1f4e9c", **dict.fromkeys(CONTROL_ROWS, "#888888")}
STUDENT_COLOUR = "#d95f02"
FRONT_COLOUR = "#1b9e77"


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


def plain(text: str) -> str:
    """`text` shown as typed: matplotlib reads `$…$` as mathtext, and a name such as `a$b$c`
    would render as a formula or, unbalanced, stop the report with a parse error."""
    return text.replace("$", r"\$")


def _save(fig: Figure, path: Path) -> Path:
    write_atomic(
        path, lambda handle: fig.savefig(handle, format="png", dpi=DPI, bbox_inches="tight")
    )
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


# Label positions tried around a point, nearest first (offsets in points): the first whose box
# overlaps no other label, marker or the axes' edge is taken.
LABEL_OFFSETS = tuple(
    (round(r * math.cos(a)), round(r * math.sin(a)))
    for r in (6, 14, 24, 36)
    for a in (math.radians(d) for d in (30, -30, 150, -150, 90, -90, 0, 180))
)


def place_labels(fig: Figure, ax: Axes, points: Sequence[Point]) -> list[Text]:
    """Label every point where its text overlaps no other label or marker, checked on the
    rendered bounding boxes; a label that fits nowhere near its point goes to a key beside the
    axes instead (name and coordinates), so that no two labels ever overlap."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # final limits and transforms before measuring
    markers = [Bbox.from_bounds(*(ax.transData.transform((p.x, p.y)) - 5), 10, 10) for p in points]
    frame = ax.get_window_extent(renderer)
    legend = ax.get_legend()
    placed: list[Bbox] = [legend.get_window_extent(renderer)] if legend else []
    labels: list[Text] = []
    unplaced: list[Point] = []
    for index, p in enumerate(points):
        for dx, dy in LABEL_OFFSETS:
            text = ax.annotate(
                plain(p.name), (p.x, p.y), xytext=(dx, dy), textcoords="offset points",
                fontsize=8, ha="left" if dx >= 0 else "right", va="bottom" if dy >= 0 else "top",
                arrowprops={"arrowstyle": "-", "color": "#999999", "linewidth": 0.5}
                if abs(dx) + abs(dy) > 20 else None,
            )  # fmt: skip
            box = text.get_window_extent(renderer).padded(1)
            others = placed + [m for i, m in enumerate(markers) if i != index]
            inside_frame = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside_frame and not any(box.overlaps(o) for o in others):
                placed.append(box)
                labels.append(text)
                break
            text.remove()
        else:
            unplaced.append(p)
    if unplaced:
        key = "\n".join(f"{plain(p.name)}: ({p.x:.3g}, {p.y:.3g})" for p in unplaced)
        labels.append(ax.text(1.02, 1.0, key, transform=ax.transAxes, fontsize=7, va="top"))
    return labels


def overlapping_labels(fig: Figure, labels: Sequence[Text]) -> list[tuple[str, str]]:
    """Pairs of labels whose rendered boxes overlap (the check `place_labels` makes)."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
    return [(a, b) for i, (a, x) in enumerate(boxes) for b, y in boxes[i + 1 :] if x.overlaps(y)]


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
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    if floor_x is not None and math.isfinite(floor_x):
        ax.axvline(floor_x, color=REFERENCE_COLOURS[RANDOM_CONTROL_ROW], linestyle="--",
                   linewidth=1, label="strongest control row (floor)")  # fmt: skip
    students = [p for p in points if p.role == "student"]
    for p in points:
        colour = REFERENCE_COLOURS.get(p.name, STUDENT_COLOUR)
        marker = "*" if p.role == "teacher" else "o"
        ax.errorbar(
            p.x,
            p.y,
            xerr=[[v] for v in clipped_error(p.x, p.x_err, valid_range(x_label))],
            yerr=[[v] for v in clipped_error(p.y, p.y_err, valid_range(y_label))],
            fmt=marker,
            color=colour,
            markersize=11 if marker == "*" else 6,
            capsize=2,
            elinewidth=0.8,
        )
    front = pareto_front(students)
    if front:
        xs, ys = [front[0].x], [front[0].y]
        for p in front[1:]:
            # Steps: moving right along the front never gains accuracy.
            xs += [p.x, p.x]
            ys += [ys[-1], p.y]
        ax.plot(xs, ys, "-", color=FRONT_COLOUR, linewidth=1.5, label="Pareto front (students)")
    if front or floor_x is not None:
        ax.legend(loc="best", fontsize=8, framealpha=0.8)
    ax.set_xlabel(plain(f"{x_label} (↑)"))
    ax.set_ylabel(plain(f"{y_label} (↑)"))
    ax.grid(alpha=0.3)
    ax.margins(0.12)  # room for labels inside the axes
    place_labels(fig, ax, points)
    return _save(fig, path)


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
    fig = Figure(figsize=(max(4.0, 0.6 * len(names) + 1.5), 3.6))
    ax = fig.add_subplot()
    colours = [REFERENCE_COLOURS.get(n, STUDENT_COLOUR) if r != "student" else STUDENT_COLOUR
               for n, r in zip(names, roles, strict=True)]  # fmt: skip
    positions = np.arange(len(names))
    bounds = valid_range(metric)
    clipped = [clipped_error(m, e, bounds) for m, e in zip(means, errors, strict=True)]
    ax.bar(positions, means, yerr=np.array(clipped).T, color=colours, capsize=3)
    ax.set_xticks(positions, [plain(n) for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(plain(label))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def strip_plot(
    names: Sequence[str], values: Sequence[Sequence[float]], roles: Sequence[str], label: str,
    path: Path,
) -> Path:  # fmt: skip
    """Every seed's value as a dot per row, spread sideways, with the mean as a short bar."""
    fig = Figure(figsize=(max(4.0, 0.6 * len(names) + 1.5), 3.6))
    ax = fig.add_subplot()
    for i, (name, vals, role) in enumerate(zip(names, values, roles, strict=True)):
        vals = np.asarray(vals, dtype=float)
        if not len(vals):
            continue
        # Fixed offsets instead of random jitter: the same records give the same picture.
        offsets = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else np.zeros(1)
        colour = (
            REFERENCE_COLOURS.get(name, STUDENT_COLOUR) if role != "student" else STUDENT_COLOUR
        )
        ax.scatter(i + offsets, vals, s=22, color=colour, alpha=0.8, zorder=3)
        ax.hlines(vals.mean(), i - 0.25, i + 0.25, color="#222222", linewidth=1.2, zorder=4)
    ax.set_xticks(
        np.arange(len(names)), [plain(n) for n in names], rotation=30, ha="right", fontsize=8
    )
    ax.set_ylabel(plain(f"{label} per seed"))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _as_image(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A CHW array as something imshow shows: grey for one channel, min-max scaled RGB for three."""
    if x.shape[0] == 1:
        return x[0], "gray"
    rgb = np.moveaxis(x[:3], 0, -1).astype(float)
    span = rgb.max() - rgb.min()
    return (rgb - rgb.min()) / (span if span > 0 else 1.0), None


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
    n_cols = max([len(maps) for _, maps in rows] + [0 if inputs is None else len(inputs)])
    n_rows = len(rows) + (inputs is not None)
    fig = Figure(figsize=(1.3 * n_cols + 1.6, 1.3 * n_rows + 0.4), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    labelled = ([("input", inputs)] if inputs is not None else []) + list(rows)
    for r, (name, arrays) in enumerate(labelled):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(arrays):
                ax.set_axis_off()
                continue
            if name == "input" and inputs is not None:
                image, cmap = _as_image(arrays[c])
                ax.imshow(image, cmap=cmap, interpolation="nearest")
            else:
                amap = np.asarray(arrays[c], dtype=float)
                amap = amap.sum(axis=0) if amap.ndim == 3 else amap
                bound = float(np.abs(amap).max()) or 1.0
                ax.imshow(amap, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
        axes[r][0].set_ylabel(plain(name), rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(plain(f"{explainer} attributions on the same test images"), fontsize=9)
    return _save(fig, path)
