"""Which parameters train: full fine-tune, the top-k encoder layers, or LoRA adapters (via peft).

The head always trains, the temperature unless ``train.learn_logit_scale`` is off. Freezing is explicit
(``requires_grad``) and reported as counts so a recipe that silently trains nothing, or everything, is
visible in the run log.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from modbind.config import TrainConfig
from modbind.contracts import EncoderOptions, EncoderPlugin
from modbind.errors import ConfigError
from modbind.model.aligned import AlignedEncoder


@dataclass(frozen=True)
class TrainableSummary:
    """How many parameters the optimizer sees versus the whole model."""

    trainable: int
    total: int
    mode: str

    def describe(self) -> str:
        share = 100.0 * self.trainable / max(self.total, 1)
        return f"{self.mode} fine-tune: {self.trainable:,} of {self.total:,} parameters train ({share:.2f}%)"


def apply_finetune(
    model: AlignedEncoder, plugin: EncoderPlugin, options: EncoderOptions, train: TrainConfig
) -> TrainableSummary:
    """Set ``requires_grad`` for the recipe's mode (wrapping LoRA targets first) and switch checkpointing."""
    encoder = model.encoder
    if train.finetune == "full":
        encoder.requires_grad_(True)
    elif train.finetune == "partial":
        _train_top_layers(encoder, train.partial_top_k)
    elif train.finetune == "lora":
        targets = train.lora.targets if train.lora.targets is not None else plugin.lora_targets(options)
        _inject_lora(encoder, targets, train, plugin.name)
    else:  # pragma: no cover - the recipe schema rules this out
        raise ConfigError(f"train.finetune: unknown mode '{train.finetune}'")
    model.head.requires_grad_(True)
    model.log_logit_scale.requires_grad_(train.learn_logit_scale)
    if options.gradient_checkpointing:
        encoder.set_gradient_checkpointing(True)
    return TrainableSummary(
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total=sum(p.numel() for p in model.parameters()),
        mode=train.finetune,
    )


def random_init_warning(plugin: EncoderPlugin, options: EncoderOptions) -> str | None:
    """A console warning when the encoder starts from random weights (None when a checkpoint is named).

    ``checkpoint: null`` in a fine-tuning recipe silently trains from scratch otherwise.
    """
    if options.checkpoint is not None:
        return None
    names = sorted(plugin.pretrained)
    hint = (f"; to fine-tune, set plugin.options.checkpoint to one of `modbind checkpoints` (e.g. {names[0]}) or "
            "a file" if names else "")
    return (f"warning: plugin.options.checkpoint is null, so the {plugin.name} encoder starts from random "
            f"weights, not from a pretrained checkpoint{hint}")


def _train_top_layers(encoder: nn.Module, k: int) -> None:
    encoder.requires_grad_(False)
    layers = encoder.layers()  # type: ignore[operator]
    if k > len(layers):
        raise ConfigError(f"train.partial_top_k is {k} but the encoder has only {len(layers)} layers")
    for layer in layers[len(layers) - k :]:
        layer.requires_grad_(True)


def _inject_lora(encoder: nn.Module, targets: list[str], train: TrainConfig, plugin_name: str) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    if not targets:
        raise ConfigError(
            f"train.finetune is 'lora' but plugin '{plugin_name}' declares no LoRA target modules; "
            "set train.lora.targets (module-name patterns) in the recipe"
        )
    config = LoraConfig(r=train.lora.r, lora_alpha=train.lora.alpha, lora_dropout=train.lora.dropout,
                        target_modules=list(targets), bias="none")
    try:
        inject_adapter_in_model(config, encoder)
    except ValueError as err:
        names = [name for name, _ in encoder.named_modules() if name][:12]
        raise ConfigError(f"train.lora.targets {targets} match no module of '{plugin_name}' ({err}); "
                          f"module names look like: {', '.join(names)}") from None
    for name, param in encoder.named_parameters():
        param.requires_grad_("lora_" in name)
