"""Depth maps in and out: 16-bit PNG in millimetres or ``.npy`` float metres, 0 meaning "no measurement".

A depth map in memory is a float32 (H, W) array in metres with 0 where the sensor saw nothing (NaN, inf
and negative readings are turned into 0 on the way in). Preprocessing averages only over measured
pixels, so holes stay holes instead of pulling their neighbours towards the camera.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from modbind import DataError

PNG_MODES = ("I;16", "I;16B", "I;16L", "I")
"""PIL modes of single-channel 16-bit PNGs; 8-bit or RGB files are pictures, not depth maps."""


def read_depth(path: Path, *, png_scale: float, max_side: int) -> np.ndarray:
    """One depth map in metres from ``.png`` (16-bit, ``png_scale`` metres per unit) or ``.npy`` (metres).

    The size is checked from the header before any pixel is decoded, so a hostile file cannot make the
    reader allocate a huge image.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            with Image.open(path) as image:
                _check_side(path, image.size, max_side)
                if image.mode not in PNG_MODES:
                    raise DataError(f"{path}: a {image.mode} image, not a single-channel 16-bit depth PNG "
                                    "(millimetres; 0 = no measurement)")
                values = np.asarray(image, dtype=np.float32) * png_scale
        elif suffix == ".npy":
            header = np.load(path, mmap_mode="r", allow_pickle=False)
            _check_side(path, header.shape[::-1], max_side)
            values = np.asarray(header, dtype=np.float32)
        else:
            raise DataError(f"{path}: unknown depth format '{suffix}' (expected .png or .npy)")
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable depth map ({err})") from None
    return as_depth(values, where=str(path))


def as_depth(value: Any, *, where: str = "depth map", scale: float = 1.0) -> np.ndarray:
    """A 2-D array-like (numpy, torch, nested lists) times ``scale`` as float32 metres, holes as 0."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float32)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:-1])
    if array.ndim != 2 or min(array.shape) == 0:
        raise DataError(f"{where}: expected a 2-D depth map (height, width), got shape {array.shape}")
    if scale != 1.0:
        array = array * np.float32(scale)
    return np.where(np.isfinite(array) & (array > 0), array, np.float32(0.0))


def _check_side(path: Path, size: tuple[int, ...], max_side: int) -> None:
    if len(size) != 2 or max(size) > max_side:
        raise DataError(f"{path}: depth map of size {size}, expected 2-D with sides up to {max_side} "
                        "(plugin option max_side)")


def square_view(depth: np.ndarray, size: int, *, train: bool, min_crop: float, flip: bool,
                generator: torch.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``×``size`` view of an (H, W) map and the share of measured pixels behind each output pixel.

    Evaluation takes the centred square; training a random square of ``min_crop``..1 of the shorter side
    at a random place, mirrored left-right half of the time (every draw from ``generator``). Resizing
    averages measured pixels only (box filter), so holes neither shrink nor bleed into valid depth. Plain
    numpy: on maps this small, torch's per-call overhead would cost more than the work.
    """
    height, width = depth.shape
    side = min(height, width)
    if train:  # one draw of four uniforms: the crop's size, its row, its column, and the mirror
        scale, row, column, mirror = torch.rand(4, generator=generator).tolist()
        side = max(1, round(side * (min_crop + (1 - min_crop) * scale)))
        top, left = int(row * (height - side + 1)), int(column * (width - side + 1))
    else:
        top, left, mirror = (height - side) // 2, (width - side) // 2, 1.0
    crop = depth[top : top + side, left : left + side]
    valid = (crop > 0).astype(np.float32)
    weights = box_weights(side, size)
    depth_sum = weights @ (crop * valid) @ weights.T
    coverage = weights @ valid @ weights.T
    mean_depth = np.divide(depth_sum, coverage, out=np.zeros_like(depth_sum), where=coverage > 0)
    if flip and mirror < 0.5:
        mean_depth, coverage = mean_depth[:, ::-1], coverage[:, ::-1]
    return np.ascontiguousarray(mean_depth), np.ascontiguousarray(coverage)


@functools.lru_cache(maxsize=64)
def box_weights(source: int, target: int) -> np.ndarray:
    """(target, source) weights of a box filter: the share of each output cell each input pixel covers."""
    edges = np.arange(target + 1) * (source / target)
    starts, ends = edges[:-1, None], edges[1:, None]
    pixels = np.arange(source)[None, :]
    overlap = np.clip(np.minimum(ends, pixels + 1) - np.maximum(starts, pixels), 0, None)
    return (overlap / (source / target)).astype(np.float32)
