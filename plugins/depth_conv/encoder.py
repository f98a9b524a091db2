"""The ``depth_conv`` encoder plugin: depth maps → a fixed square view → a small CNN → one vector.

Written against modbind's public contract only (``modbind.EncoderPlugin`` and friends), exactly as a
third-party package would be; it is the in-tree example of a modality that is not audio.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from modbind import CheckpointError, ConfigError, EncoderOptions, EncoderOutput, EncoderPlugin, ModalityEncoder
from modbind import PackedItem
from modbind_depth_conv.maps import as_depth, read_depth, square_view

PACKED_FORMAT = "depth-f32-metres"

TEMPLATES: dict[str, str] = {
    "en": "a depth map of {}.",
    "pt": "um mapa de profundidade de {}.",
    "es": "un mapa de profundidad de {}.",
    "fr": "une carte de profondeur de {}.",
    "de": "eine Tiefenkarte von {}.",
    "ru": "карта глубины: {}.",
}
"""Default zero-shot prompt per language (``{}`` takes the class name in that language)."""


class DepthOptions(EncoderOptions):
    """How depth maps are read, viewed and encoded."""

    size: int = Field(32, ge=8)
    """Side of the square view the CNN sees, in pixels."""
    max_depth: float = Field(10.0, gt=0)
    """Metres mapped to 1.0 (farther readings are clipped): the range the encoder distinguishes."""
    png_scale: float = Field(0.001, gt=0)
    """Metres per unit of a 16-bit PNG (0.001: millimetres; TUM RGB-D files use 0.0002)."""
    max_side: int = Field(8192, ge=1)
    """Largest side a file may declare; a larger header is refused before decoding (the file is skipped)."""
    random_crop: bool = True
    """Training view: a random square of ``min_crop``..1 of the shorter side (False: the centred square)."""
    min_crop: float = Field(0.8, gt=0, le=1)
    flip: bool = True
    """Training view: mirror left-right half of the time."""
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1)
    """Output channels of the stride-2 conv blocks; the last one is the encoder's width."""


class DepthCNN(ModalityEncoder):
    """Stride-2 3×3 conv blocks (GroupNorm, GELU) over (depth, coverage), then the mean over positions."""

    def __init__(self, options: DepthOptions):
        super().__init__()
        blocks: list[nn.Module] = []
        before = 2
        for after in options.channels:
            blocks.append(nn.Sequential(nn.Conv2d(before, after, 3, stride=2, padding=1),
                                        nn.GroupNorm(min(4, after), after), nn.GELU()))
            before = after
        self.blocks = nn.ModuleList(blocks)
        self.width = before

    def forward(self, features: dict[str, Tensor]) -> EncoderOutput:
        x = torch.stack([features["depth"], features["coverage"]], dim=1)
        for block in self.blocks:
            x = block(x)
        tokens = x.flatten(2).transpose(1, 2)
        return EncoderOutput(pooled=tokens.mean(1), tokens=tokens)

    def layers(self) -> list[nn.Module]:
        return list(self.blocks)


class DepthConvPlugin(EncoderPlugin[DepthOptions]):
    """Single-channel depth maps (16-bit PNG in millimetres or ``.npy`` in metres; 0 = no measurement)."""

    name: ClassVar[str] = "depth_conv"
    modality: ClassVar[str] = "depth"
    Options: ClassVar[type[EncoderOptions]] = DepthOptions
    file_extensions: ClassVar[tuple[str, ...]] = (".png", ".npy")
    item_noun: ClassVar[str] = "depth maps"
    zeroshot_templates: ClassVar[Mapping[str, str]] = TEMPLATES
    packed_format: ClassVar[str | None] = PACKED_FORMAT

    def load_item(self, path: Path, options: DepthOptions) -> np.ndarray:
        return read_depth(Path(path), png_scale=options.png_scale, max_side=options.max_side)

    def as_item(self, value: Any, options: DepthOptions, **hints: Any) -> np.ndarray:
        """A 2-D array in metres; ``scale=`` converts other units (e.g. ``scale=0.001`` for millimetres)."""
        scale = hints.pop("scale", 1.0)
        if hints:
            raise ConfigError(f"depth maps take only the hint scale= (got {', '.join(hints)})")
        return as_depth(value, scale=float(scale))

    def preprocess(self, item: Any, options: DepthOptions, *, train: bool,
                   generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"depth": (S, S) in [0, 1] (metres / max_depth), "coverage": (S, S) share of measured pixels}``."""
        mean_depth, coverage = square_view(as_depth(item), options.size, train=train and options.random_crop,
                                           min_crop=options.min_crop, flip=train and options.flip,
                                           generator=generator)
        return {"depth": torch.from_numpy(np.minimum(mean_depth / options.max_depth, 1.0)),
                "coverage": torch.from_numpy(coverage)}

    def eval_policy(self, options: DepthOptions) -> str:
        return (f"deterministic: the centred square of each depth map, area-averaged over measured pixels to "
                f"{options.size}×{options.size}, depth / {options.max_depth:g} m clipped at 1; no crops or flips")

    def lora_targets(self, options: DepthOptions) -> list[str]:
        """Every block's convolution unless ``options.lora_targets`` says otherwise."""
        if options.lora_targets is not None:
            return list(options.lora_targets)
        return [f"blocks.{i}.0" for i in range(len(options.channels))]

    def new_encoder(self, options: DepthOptions) -> DepthCNN:
        return DepthCNN(options)

    def load_checkpoint(self, path: Path, options: DepthOptions) -> DepthCNN:
        """An encoder state dict saved with safetensors (e.g. from an earlier run's weights)."""
        encoder = DepthCNN(options)
        try:
            encoder.load_state_dict(load_file(str(path)))
        except (OSError, SafetensorError, RuntimeError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{path}: not a depth_conv encoder state dict for channels "
                                  f"{options.channels} ({reason})") from None
        return encoder

    def pack_item(self, item: Any, options: DepthOptions, *, max_seconds: float | None = None) -> PackedItem:
        """The map in metres as little-endian float32, exactly what ``load_item`` returned."""
        depth = as_depth(item)
        return PackedItem(depth.astype("<f4").tobytes(), {"shape": list(depth.shape)})

    def unpack_item(self, packed: PackedItem, options: DepthOptions) -> np.ndarray:
        height, width = (int(v) for v in packed.meta["shape"])
        return np.frombuffer(packed.data, dtype="<f4").reshape(height, width).astype(np.float32)
