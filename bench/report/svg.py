"""SVG written directly: the few shapes the report's figures need, text boxes, ticks and PNG tiles.

The figures were drawn with matplotlib, which took half the report's time on the reference set
(5.0 of 10.4 s under cProfile) and 0.5 s more to import. They are points, bars, lines and text, which SVG states in a
few bytes each; the attribution gallery's maps are small images, embedded as PNG tiles encoded
here with zlib. Text is set in a monospace font, whose glyphs all advance by about 0.6 em, so
that a label's box is known without a renderer and labels can be placed where they overlap
nothing (`bench.report.figures.place_labels`).

A `Drawing` keeps the extent of everything drawn on it and sizes the picture to it, so nothing is
cut off and no margin is guessed.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from dataclasses import dataclass
from html import escape

import numpy as np

FONT = "DejaVu Sans Mono, Liberation Mono, Menlo, Consolas, monospace"
# The advance of a glyph in em: 0.602 in DejaVu Sans Mono and Menlo, 0.6 in Liberation Mono and
# Courier, 0.55 in Consolas; a label's box errs on the wide side.
CHAR_WIDTH = 0.62
# Above and below the baseline, in em: DejaVu Sans Mono's line box (0.93 + 0.24), which a browser
# rounds up to whole pixels (13 px at 10.5 px) in the box it gives a text element.
ASCENT = 1.0
DESCENT = 0.3
PAD = 4.0  # around the drawing's extent


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in pixels, y downwards."""

    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )

    def within(self, other: Box) -> bool:
        return (
            self.x0 >= other.x0
            and self.x1 <= other.x1
            and self.y0 >= other.y0
            and self.y1 <= other.y1
        )

    def padded(self, by: float) -> Box:
        return Box(self.x0 - by, self.y0 - by, self.x1 + by, self.y1 + by)


def text_width(text: str, size: float) -> float:
    return len(text) * CHAR_WIDTH * size


def text_box(text: str, x: float, y: float, size: float, anchor: str = "start") -> Box:
    """The box of `text` set at (x, y), y its baseline; `anchor` start, middle or end."""
    width = text_width(text, size)
    left = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    return Box(left, y - ASCENT * size, left + width, y + DESCENT * size)


def nice_ticks(low: float, high: float, target: int = 6) -> tuple[list[float], int]:
    """Tick values between `low` and `high` at a step of 1, 2, 2.5 or 5 × 10^k, about `target`
    of them; and the decimals that show the step exactly."""
    span = high - low
    if not (math.isfinite(span) and span > 0):
        return [low], 2
    raw = span / target
    magnitude = 10 ** math.floor(math.log10(raw))
    factor = next(m for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    step = factor * magnitude
    decimals = next(d for d in range(16) if abs(step * 10**d - round(step * 10**d)) < 1e-6)
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    # Rounded to the decimals shown: no 0.30000000000000004, no -0.
    return [round(i * step, decimals) + 0.0 for i in range(first, last + 1)], decimals


def png(rgb: np.ndarray) -> bytes:
    """An (h, w, 3) uint8 array as a PNG file: 8-bit RGB, each row unfiltered, zlib-compressed."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + chunk(b"IEND", b"")
    )


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


class Drawing:
    """SVG elements in drawing order, and the box that holds them all."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.extent: Box | None = None

    def _grow(self, box: Box) -> None:
        e = self.extent
        self.extent = box if e is None else Box(
            min(e.x0, box.x0), min(e.y0, box.y0), max(e.x1, box.x1), max(e.y1, box.y1)
        )  # fmt: skip

    def line(
        self, x1: float, y1: float, x2: float, y2: float, colour: str, width: float = 1.0,
        dash: str | None = None,
    ) -> None:  # fmt: skip
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" '
            f'stroke="{colour}" stroke-width="{width}"{extra}/>'
        )
        self._grow(Box(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)).padded(width / 2))

    def polyline(self, points: list[tuple[float, float]], colour: str, width: float) -> None:
        coordinates = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
        self.parts.append(
            f'<polyline points="{coordinates}" fill="none" stroke="{colour}" '
            f'stroke-width="{width}"/>'
        )
        xs, ys = [x for x, _ in points], [y for _, y in points]
        self._grow(Box(min(xs), min(ys), max(xs), max(ys)).padded(width / 2))

    def circle(
        self, x: float, y: float, radius: float, colour: str, opacity: float | None = None
    ) -> None:
        extra = f' fill-opacity="{opacity}"' if opacity is not None else ""
        self.parts.append(
            f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{radius}" fill="{colour}"{extra}/>'
        )
        self._grow(Box(x - radius, y - radius, x + radius, y + radius))

    def star(self, x: float, y: float, radius: float, colour: str) -> None:
        """A five-pointed star (the teacher's marker), its inner radius 0.4 of the outer."""
        corners = []
        for i in range(10):
            r = radius if i % 2 == 0 else 0.4 * radius
            angle = math.pi / 2 + i * math.pi / 5
            corners.append((x + r * math.cos(angle), y - r * math.sin(angle)))
        coordinates = " ".join(f"{_num(a)},{_num(b)}" for a, b in corners)
        self.parts.append(f'<polygon points="{coordinates}" fill="{colour}"/>')
        self._grow(Box(x - radius, y - radius, x + radius, y + radius))

    def rect(
        self, x: float, y: float, width: float, height: float, fill: str = "none",
        stroke: str | None = None, opacity: float | None = None,
    ) -> None:  # fmt: skip
        extra = (f' stroke="{stroke}" stroke-width="0.8"' if stroke else "") + (
            f' fill-opacity="{opacity}"' if opacity is not None else ""
        )
        self.parts.append(
            f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(width)}" height="{_num(height)}" '
            f'fill="{fill}"{extra}/>'
        )
        self._grow(Box(x, y, x + width, y + height))

    def text(
        self, x: float, y: float, text: str, size: float = 11, anchor: str = "start",
        rotate: float = 0.0, css: str | None = None,
    ) -> None:  # fmt: skip
        """`text` with its baseline at y; `rotate` (degrees, clockwise) turns it about (x, y)."""
        box = text_box(text, x, y, size, anchor)
        attributes = f'x="{_num(x)}" y="{_num(y)}" font-size="{size}" fill="#222222"'
        if anchor != "start":
            attributes += f' text-anchor="{anchor}"'
        if rotate:
            attributes += f' transform="rotate({_num(rotate)} {_num(x)} {_num(y)})"'
        if css:
            attributes += f' class="{css}"'
        self.parts.append(f"<text {attributes}>{escape(text)}</text>")
        self._grow(_rotated(box, x, y, rotate) if rotate else box)

    def image(self, x: float, y: float, width: float, height: float, picture: bytes) -> None:
        """A PNG shown at (x, y) with the given size, its pixels kept square and sharp."""
        data = base64.b64encode(picture).decode("ascii")
        self.parts.append(
            f'<image x="{_num(x)}" y="{_num(y)}" width="{_num(width)}" height="{_num(height)}" '
            f'preserveAspectRatio="none" style="image-rendering:pixelated" '
            f'href="data:image/png;base64,{data}"/>'
        )
        self._grow(Box(x, y, x + width, y + height))

    def svg(self) -> str:
        """The document, its view box the extent of what was drawn plus a small margin."""
        e = (self.extent or Box(0, 0, 1, 1)).padded(PAD)
        width, height = math.ceil(e.x1 - e.x0), math.ceil(e.y1 - e.y0)
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="{_num(e.x0)} {_num(e.y0)} {width} {height}" font-family="{FONT}">\n'
            f'<rect x="{_num(e.x0)}" y="{_num(e.y0)}" width="{width}" height="{height}" '
            'fill="#ffffff"/>\n' + "\n".join(self.parts) + "\n</svg>\n"
        )


def _rotated(box: Box, x: float, y: float, degrees: float) -> Box:
    """The box that holds `box` turned by `degrees` (clockwise, y down) about (x, y)."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(box.x0, box.y0), (box.x1, box.y0), (box.x0, box.y1), (box.x1, box.y1)]
    turned = [(x + (a - x) * cos - (b - y) * sin, y + (a - x) * sin + (b - y) * cos)
              for a, b in corners]  # fmt: skip
    xs, ys = [a for a, _ in turned], [b for _, b in turned]
    return Box(min(xs), min(ys), max(xs), max(ys))
