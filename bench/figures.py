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
from matplotlib.figure import Figure

from bench.method import CONTROL_ROWS, RANDOM_CONTROL_ROW, TEACHER_ROW
from bench.store import write_atomic

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
            xerr=_finite(p.x_err),
            yerr=_finite(p.y_err),
            fmt=marker,
            color=colour,
            markersize=11 if marker == "*" else 6,
            capsize=2,
            elinewidth=0.8,
        )
    # Neighbours along x get their labels above and below in turn, so that close points stay
    # readable.
    for i, p in enumerate(sorted(points, key=lambda p: p.x)):
        offset = (4, 4) if i % 2 == 0 else (4, -11)
        ax.annotate(
            plain(p.name), (p.x, p.y), xytext=offset, textcoords="offset points", fontsize=8
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
    return _save(fig, path)


def bar_chart(
    names: Sequence[str],
    means: Sequence[float],
    errors: Sequence[float],
    roles: Sequence[str],
    label: str,
    path: Path,
) -> Path:
    """One bar per row (teacher first) with its 95 % interval half-width as an error bar."""
    fig = Figure(figsize=(max(4.0, 0.6 * len(names) + 1.5), 3.6))
    ax = fig.add_subplot()
    colours = [REFERENCE_COLOURS.get(n, STUDENT_COLOUR) if r != "student" else STUDENT_COLOUR
               for n, r in zip(names, roles, strict=True)]  # fmt: skip
    positions = np.arange(len(names))
    ax.bar(positions, means, yerr=[_finite(e) for e in errors], color=colours, capsize=3)
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
