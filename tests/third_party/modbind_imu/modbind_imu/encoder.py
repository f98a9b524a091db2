"""A small 1-D convolutional encoder over 6-channel IMU windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from modbind import DataError, EncoderOptions, EncoderOutput, EncoderPlugin, ModalityEncoder


class ImuOptions(EncoderOptions):
    channels: int = 6
    window: int = 200
    """Samples per item (2 s at 100 Hz); longer series are cropped, shorter ones zero-padded."""
    width: int = 32
    depth: int = 2


class ImuConvEncoder(ModalityEncoder):
    def __init__(self, options: ImuOptions):
        super().__init__()
        self.width = options.width
        blocks: list[nn.Module] = []
        in_ch = options.channels
        for _ in range(options.depth):
            blocks.append(nn.Sequential(nn.Conv1d(in_ch, options.width, 5, padding=2), nn.GELU()))
            in_ch = options.width
        self.blocks = nn.ModuleList(blocks)

    def forward(self, features: dict[str, Tensor]) -> EncoderOutput:
        x = features["series"]
        keep = (~features["padding_mask"]).float().unsqueeze(1)
        for block in self.blocks:
            x = block(x)
        pooled = (x * keep).sum(-1) / keep.sum(-1).clamp(min=1)
        return EncoderOutput(pooled=pooled, tokens=x.transpose(1, 2))

    def layers(self) -> list[nn.Module]:
        return list(self.blocks)


class ImuConvPlugin(EncoderPlugin[ImuOptions]):
    name = "imu_conv"
    modality = "imu"
    Options = ImuOptions
    file_extensions = (".npy",)
    default_lora_targets = ("blocks.0.0", "blocks.1.0")

    def load_item(self, path: Path, options: ImuOptions) -> np.ndarray:
        try:
            series = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable .npy IMU series ({err})") from None
        if series.ndim != 2 or series.shape[0] != options.channels:
            raise DataError(f"{path}: expected shape (6, samples), got {series.shape}")
        return series.astype(np.float32)

    def preprocess(self, item: Any, options: ImuOptions, *, train: bool,
                   generator: torch.Generator | None = None) -> dict[str, Tensor]:
        series = torch.as_tensor(item)[:, : options.window]
        mask = torch.zeros(options.window, dtype=torch.bool)
        if series.shape[1] < options.window:
            mask[series.shape[1]:] = True
            series = nn.functional.pad(series, (0, options.window - series.shape[1]))
        return {"series": series, "padding_mask": mask}

    def new_encoder(self, options: ImuOptions) -> ModalityEncoder:
        return ImuConvEncoder(options)

    def load_checkpoint(self, path: Path, options: ImuOptions) -> ModalityEncoder:
        from safetensors.torch import load_file

        encoder = ImuConvEncoder(options)
        encoder.load_state_dict(load_file(str(path)))
        return encoder
