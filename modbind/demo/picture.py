"""Small RGB pictures of the demo world: each concept is a shape in a hue of its own on a noisy ground.

Variation per picture: position, size, rotation-free jitter of hue, saturation and brightness, the
background colour and pixel noise. A two-concept scene shows both objects side by side in random order.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from modbind.demo.concepts import PictureSignature

SUPERSAMPLE = 4
"""Shapes are drawn this many times larger and box-filtered down, which anti-aliases their edges."""

Box = tuple[float, float, float, float]
Fill = tuple[int, int, int]


def _polygon(draw: ImageDraw.ImageDraw, box: Box, fill: Fill, points: Sequence[tuple[float, float]]) -> None:
    x0, y0, x1, y1 = box
    draw.polygon([(x0 + px * (x1 - x0), y0 + py * (y1 - y0)) for px, py in points], fill=fill)


def _stripes(draw: ImageDraw.ImageDraw, box: Box, fill: Fill) -> None:
    x0, y0, x1, y1 = box
    w = (x1 - x0) / 7
    for i in range(0, 7, 2):
        draw.rectangle((x0 + i * w, y0, x0 + (i + 1) * w, y1), fill=fill)


def _cross(draw: ImageDraw.ImageDraw, box: Box, fill: Fill) -> None:
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) / 3, (y1 - y0) / 3
    draw.rectangle((x0 + w, y0, x1 - w, y1), fill=fill)
    draw.rectangle((x0, y0 + h, x1, y1 - h), fill=fill)


def _frame(draw: ImageDraw.ImageDraw, box: Box, fill: Fill) -> None:
    width = max(1, int((box[2] - box[0]) / 5))
    draw.rectangle(box, outline=fill, width=width)


def _ring(draw: ImageDraw.ImageDraw, box: Box, fill: Fill) -> None:
    width = max(1, int((box[2] - box[0]) / 5))
    draw.ellipse(box, outline=fill, width=width)


def _wave(draw: ImageDraw.ImageDraw, box: Box, fill: Fill) -> None:
    x0, y0, x1, y1 = box
    xs = np.linspace(x0, x1, 24)
    ys = (y0 + y1) / 2 + (y1 - y0) / 3 * np.sin(np.linspace(0, 3 * np.pi, 24))
    draw.line(list(zip(xs.tolist(), ys.tolist())), fill=fill, width=max(1, int((x1 - x0) / 6)))


def _dots(draw: ImageDraw.ImageDraw, box: Box, fill: Fill) -> None:
    x0, y0, x1, y1 = box
    step = (x1 - x0) / 3
    for i in range(3):
        for j in range(3):
            if (i + j) % 2 == 0:
                cx, cy = x0 + (i + 0.5) * step, y0 + (j + 0.5) * step
                draw.ellipse((cx - step / 2.6, cy - step / 2.6, cx + step / 2.6, cy + step / 2.6), fill=fill)


def _keys(draw: ImageDraw.ImageDraw, box: Box, fill: Fill) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle((x0, y0 + (y1 - y0) * 0.55, x1, y1), fill=fill)
    w = (x1 - x0) / 5
    for i in (0, 2, 4):
        draw.rectangle((x0 + i * w, y0, x0 + (i + 1) * w, y1), fill=fill)


SHAPES: dict[str, Callable[[ImageDraw.ImageDraw, Box, Fill], None]] = {
    "circle": lambda d, b, f: d.ellipse(b, fill=f),
    "square": lambda d, b, f: d.rectangle(b, fill=f),
    "triangle": lambda d, b, f: _polygon(d, b, f, [(0.5, 0), (1, 1), (0, 1)]),
    "triangle_down": lambda d, b, f: _polygon(d, b, f, [(0, 0), (1, 0), (0.5, 1)]),
    "diamond": lambda d, b, f: _polygon(d, b, f, [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]),
    "bolt": lambda d, b, f: _polygon(d, b, f, [(0.6, 0), (0.15, 0.55), (0.45, 0.55), (0.3, 1), (0.85, 0.4),
                                               (0.55, 0.4)]),
    "half_disc": lambda d, b, f: d.pieslice(b, 180, 360, fill=f),
    "bar": lambda d, b, f: d.rectangle((b[0], b[1] + (b[3] - b[1]) * 0.3, b[2], b[3] - (b[3] - b[1]) * 0.3), fill=f),
    "star": lambda d, b, f: _polygon(d, b, f, [(0.5 + 0.5 * r * np.sin(a), 0.5 - 0.5 * r * np.cos(a))
                                               for a, r in zip(np.linspace(0, 2 * np.pi, 10, endpoint=False),
                                                               [1.0, 0.4] * 5)]),
    "stripes": _stripes,
    "cross": _cross,
    "frame": _frame,
    "ring": _ring,
    "wave": _wave,
    "dots": _dots,
    "keys": _keys,
}


def _concept_colour(sig: PictureSignature, rng: np.random.Generator) -> Fill:
    hue = (sig.hue + rng.uniform(-0.012, 0.012)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def draw_scene(signatures: Sequence[PictureSignature], rng: np.random.Generator, size: int = 32) -> Image.Image:
    """A ``size``×``size`` RGB picture showing every concept of ``signatures`` once."""
    big = size * SUPERSAMPLE
    ground = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.25), rng.uniform(0.12, 0.4))
    canvas = Image.new("RGB", (big, big), tuple(int(c * 255) for c in ground))
    draw = ImageDraw.Draw(canvas)
    order = rng.permutation(len(signatures))
    slot_width = big / len(signatures)
    for slot, index in enumerate(order):
        sig = signatures[int(index)]
        extent = rng.uniform(0.55, 0.8) * min(slot_width, big * 0.8)
        x0 = slot * slot_width + rng.uniform(0, slot_width - extent)
        y0 = rng.uniform(0, big - extent)
        SHAPES[sig.shape](draw, (x0, y0, x0 + extent, y0 + extent), _concept_colour(sig, rng))
    small = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    small = small + rng.normal(0.0, 6.0, size=small.shape)
    return Image.fromarray(np.clip(small, 0, 255).astype(np.uint8), "RGB")
