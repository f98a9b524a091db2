"""Depth maps of the demo world: what a depth camera sees of each concept's scene.

A concept is its picture's silhouette standing in front of a tilted back wall, at the concept's own
typical distance, with the concept's own surface relief (flat, dome, pyramid or ridges). Hue, the
pictures' strongest cue, does not exist in depth: a depth encoder has to combine shape, distance and
relief. Variation per map: position and size, ±12 % distance, the wall's distance and tilt, 1 % range
noise and up to 4 % missing readings (0, as a real sensor reports them). A two-concept scene shows both
objects side by side in random order, like the picture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from modbind.demo.concepts import DepthSignature
from modbind.demo.picture import SHAPES, SUPERSAMPLE

RELIEF_HEIGHT = 0.45
"""Metres a relief's highest point stands out towards the camera."""

RELIEFS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "flat": lambda u, v: np.zeros_like(u),
    "dome": lambda u, v: np.clip(1.0 - (u**2 + v**2), 0.0, None),
    "pyramid": lambda u, v: np.clip(1.0 - np.maximum(np.abs(u), np.abs(v)), 0.0, None),
    "ridges": lambda u, v: 0.5 + 0.5 * np.cos(3 * np.pi * u),
}
"""Height profiles in [0, 1] over the object's box (u, v in [-1, 1] from its centre)."""


def depth_scene(objects: Sequence[tuple[str, DepthSignature]], rng: np.random.Generator,
                size: int = 32) -> np.ndarray:
    """A ``size``×``size`` depth map in metres (0 = no reading) of every (shape, signature) in ``objects``."""
    big = size * SUPERSAMPLE
    ys, xs = np.mgrid[0:big, 0:big].astype(np.float64)
    tilt_x, tilt_y = rng.uniform(-0.8, 0.8, size=2)
    depth = rng.uniform(5.0, 7.5) + (tilt_x * (xs / big - 0.5) + tilt_y * (ys / big - 0.5))
    order = rng.permutation(len(objects))
    slot_width = big / len(objects)
    for slot, index in enumerate(order):
        shape, sig = objects[int(index)]
        extent = rng.uniform(0.55, 0.8) * min(slot_width, big * 0.8)
        x0 = slot * slot_width + rng.uniform(0, slot_width - extent)
        y0 = rng.uniform(0, big - extent)
        mask = _silhouette(shape, (x0, y0, x0 + extent, y0 + extent), big)
        u = (xs - (x0 + extent / 2)) / (extent / 2)
        v = (ys - (y0 + extent / 2)) / (extent / 2)
        surface = sig.distance * rng.uniform(0.88, 1.12) - RELIEF_HEIGHT * RELIEFS[sig.relief](u, v)
        depth = np.where(mask & (surface < depth), surface, depth)
    small = depth.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    small = small * (1.0 + rng.normal(0.0, 0.01, size=small.shape))
    small[rng.random(small.shape) < rng.uniform(0.0, 0.04)] = 0.0
    return small.astype(np.float32)


def as_png(depth: np.ndarray) -> Image.Image:
    """A 16-bit single-channel PNG image in millimetres (the depth plugin's file format)."""
    return Image.fromarray(np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16))


def _silhouette(shape: str, box: tuple[float, float, float, float], big: int) -> np.ndarray:
    """Where the shape covers the canvas, drawn by the same code as the concept's picture."""
    canvas = Image.new("RGB", (big, big))
    SHAPES[shape](ImageDraw.Draw(canvas), box, (255, 255, 255))
    return np.asarray(canvas)[..., 0] > 127
