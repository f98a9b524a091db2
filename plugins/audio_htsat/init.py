"""Fresh weights the way the official HTS-AT initialises them (used only when no checkpoint is given).

Official ``_init_weights``: Linear weights truncated-normal with std 0.02 and zero bias, LayerNorm (1, 0),
relative-position bias tables truncated-normal with std 0.02; convolutions and bn0 keep PyTorch's defaults.
transformers' CLAP init differs (normal std ~0.013, zero bias tables), which matters when training from scratch.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def init_like_official(model: nn.Module) -> None:
    """Re-initialise ``model`` (a ``ClapAudioModel``) in place with the official HTS-AT scheme."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            module.reset_parameters()
        table = getattr(module, "relative_position_bias_table", None)
        if isinstance(table, nn.Parameter):
            nn.init.trunc_normal_(table, std=0.02)
