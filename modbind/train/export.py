"""The exported, aligned model: encoder + head + temperature as safetensors and a JSON card.

``modbind.load(path)`` returns an :class:`AlignedModel`; evaluation and embedding only ever see this
object, never trainer internals. The frozen anchor is referenced by the card (config + identity) and
loaded lazily, so encoding a modality never pays for the text tower.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

import modbind
from modbind.atomic import atomic_path, write_json_atomic
from modbind.config import AnchorConfig
from modbind.contracts import EncoderOptions, EncoderPlugin
from modbind.errors import CheckpointError, ModbindError
from modbind.train.finetune import merge_lora_
from modbind.train.head import HeadKind
from modbind.train.model import AlignedEncoder

CARD_FORMAT = "modbind-aligned-model"
CARD_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"


class AlignedModel:
    """A trained (or untrained, for chance-level controls) encoder in the anchor's space."""

    def __init__(
        self,
        plugin: EncoderPlugin,
        options: EncoderOptions,
        model: AlignedEncoder,
        card: dict[str, Any],
        *,
        anchor: Any | None = None,
        device: str = "cpu",
    ):
        self.plugin = plugin
        self.options = options
        self.model = model.to(device).eval()
        self.card = card
        self.device = torch.device(device)
        self._anchor = anchor

    @property
    def encoder(self) -> torch.nn.Module:
        return self.model.encoder

    @property
    def head(self) -> torch.nn.Module:
        return self.model.head

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale().detach())

    @property
    def anchor(self) -> Any:
        """The frozen anchor named by the card, loaded on first use and checked against its identity."""
        if self._anchor is None:
            from modbind.anchor import load_anchor

            anchor = load_anchor(AnchorConfig.model_validate(self.card["anchor"]), device=str(self.device))
            expected = self.card.get("anchor_identity")
            if expected and anchor.identity != expected:
                raise CheckpointError(
                    f"the anchor loaded from the card's config is '{anchor.identity}' but this model was aligned "
                    f"to '{expected}'; point the card's anchor at the original weights"
                )
            self._anchor = anchor
        return self._anchor

    @torch.inference_mode()
    def encode(self, items: Sequence[Any], batch_size: int = 32, progress: bool = False) -> Tensor:
        """L2-normalised embeddings (N, dim) on CPU, using the plugin's deterministic evaluation policy.

        Paths (``str``/``Path``) are decoded with ``plugin.load_item``; anything else is treated as an
        already-decoded raw item (e.g. an ``AudioClip``) and goes straight to ``preprocess``.
        """
        outputs: list[Tensor] = []
        starts = range(0, len(items), batch_size)
        for start in tqdm(starts, desc="encode", unit="batch", disable=not progress):
            chunk = items[start : start + batch_size]
            prepared = [self.plugin.preprocess(self._decode(item), self.options, train=False) for item in chunk]
            batch = {key: torch.stack([p[key] for p in prepared]).to(self.device) for key in prepared[0]}
            features = self.plugin.featurize(batch, self.options)
            outputs.append(self.model(features).float().cpu())
        if not outputs:
            return torch.empty(0, self.dim)
        return torch.cat(outputs)

    def encode_audio(
        self, items: Sequence[Any], sample_rate: int | None = None, batch_size: int = 32, progress: bool = False
    ) -> Tensor:
        """``encode`` for audio plugins that also accepts numpy/torch waveforms recorded at ``sample_rate``."""
        if self.plugin.modality != "audio":
            raise ModbindError(f"encode_audio needs an audio plugin; '{self.plugin.name}' encodes {self.plugin.modality}")
        converted = [self._waveform_to_clip(item, sample_rate) for item in items]
        return self.encode(converted, batch_size=batch_size, progress=progress)

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        return self.anchor.encode_text(list(texts), batch_size=batch_size)

    def encode_image(self, images: Sequence[Any], batch_size: int = 64) -> Tensor:
        return self.anchor.encode_image(list(images), batch_size=batch_size)

    def save(self, directory: Path) -> Path:
        """Write ``model.safetensors`` then ``card.json`` (each atomically; the card last marks completion)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = exportable_state_dict(self.model)
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": CARD_FORMAT})
        write_json_atomic(directory / CARD_FILE, self.card)
        return directory

    def _decode(self, item: Any) -> Any:
        if isinstance(item, (str, os.PathLike)):
            return self.plugin.load_item(Path(item), self.options)
        return item

    def _waveform_to_clip(self, item: Any, sample_rate: int | None) -> Any:
        if isinstance(item, (str, os.PathLike)):
            return item
        if isinstance(item, Tensor):
            item = item.detach().cpu().numpy()
        if hasattr(item, "ndim") and hasattr(item, "dtype"):  # a numpy waveform
            if sample_rate is None:
                raise ModbindError("encode_audio got a raw waveform: pass sample_rate= (the rate it was recorded at)")
            from modbind.audio.io import to_clip

            return to_clip(item, sample_rate, self.options.sample_rate)  # type: ignore[attr-defined]
        return item


def exportable_state_dict(model: AlignedEncoder) -> dict[str, Tensor]:
    """Plain fp32 weights: LoRA adapters merged into their base layers, so the card's plugin rebuilds it."""
    plain = copy.deepcopy(model)
    merge_lora_(plain)
    return {k: v.detach().float().contiguous().cpu() for k, v in plain.state_dict().items()}


def make_card(
    plugin: EncoderPlugin,
    options: EncoderOptions,
    anchor_config: AnchorConfig,
    anchor_identity: str,
    model: AlignedEncoder,
    *,
    recipe: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to rebuild and trust the model: plugin, options, anchor, recipe, metrics."""
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "plugin": plugin.name,
        "modality": plugin.modality,
        "plugin_options": options.model_dump(mode="json"),
        "anchor": anchor_config.model_dump(mode="json"),
        "anchor_identity": anchor_identity,
        "dim": model.dim,
        "width": model.encoder.width,
        "head": model.head_kind,
        "logit_scale": float(model.logit_scale().detach()),
        "recipe": recipe,
        "metrics": metrics or {},
        "modbind_version": modbind.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def build_aligned_model(
    plugin: str,
    plugin_options: dict[str, Any],
    anchor: AnchorConfig,
    *,
    head: HeadKind = "linear",
    seed: int = 0,
    device: str = "cpu",
) -> AlignedModel:
    """An untrained encoder + head in the anchor's space: the chance-level control for evaluation."""
    from modbind.anchor import load_anchor
    from modbind.plugins import get_registry

    encoder_plugin = get_registry().encoder(plugin)
    options = encoder_plugin.options(plugin_options)
    loaded_anchor = load_anchor(anchor, device=device)
    torch.manual_seed(seed)
    model = AlignedEncoder(encoder_plugin.build_encoder(options), loaded_anchor.dim, head=head,
                           logit_scale=loaded_anchor.logit_scale)
    card = make_card(encoder_plugin, options, anchor, loaded_anchor.identity, model, metrics={"trained": False})
    return AlignedModel(encoder_plugin, options, model, card, anchor=loaded_anchor, device=device)


def load_aligned_model(path: Path | str, device: str = "cpu") -> AlignedModel:
    """Rebuild an exported model from its folder (``card.json`` + ``model.safetensors``)."""
    from modbind.plugins import get_registry

    directory = Path(path)
    card = read_card(directory)
    plugin = get_registry().encoder(card["plugin"])
    options = plugin.options(card["plugin_options"])
    weights_path = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{weights_path}: cannot read the exported weights ({err}); re-export the model") from None
    model = _rebuild(plugin, options, card, state, directory)
    return AlignedModel(plugin, options, model, card, device=device)


def read_card(directory: Path) -> dict[str, Any]:
    card_path = Path(directory) / CARD_FILE
    if not card_path.is_file():
        raise CheckpointError(f"{directory} is not an exported modbind model (no {CARD_FILE}); "
                              "pass the 'export' folder of a run")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{card_path}: not valid JSON ({err})") from None
    if card.get("format") != CARD_FORMAT:
        raise CheckpointError(f"{card_path}: format is {card.get('format')!r}, expected '{CARD_FORMAT}'")
    missing = [k for k in ("plugin", "plugin_options", "anchor", "dim", "head") if k not in card]
    if missing:
        raise CheckpointError(f"{card_path}: missing field(s) {', '.join(missing)}")
    return card


def _rebuild(
    plugin: EncoderPlugin, options: EncoderOptions, card: dict[str, Any], state: dict[str, Tensor], directory: Path
) -> AlignedEncoder:
    """Build the architecture without the original checkpoint when possible, else from it; load strictly."""
    attempts = [options.model_copy(update={"checkpoint": None})]
    if options.checkpoint is not None and Path(options.checkpoint).is_file():
        attempts.append(options)
    problem = ""
    for attempt in attempts:
        model = AlignedEncoder(plugin.build_encoder(attempt), int(card["dim"]), head=card["head"])
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            problem = str(err).splitlines()[-1].strip()
            continue
        if not result.missing_keys and not result.unexpected_keys:
            return model
        problem = f"missing {sorted(result.missing_keys)[:5]}, unexpected {sorted(result.unexpected_keys)[:5]}"
    raise CheckpointError(
        f"{directory / WEIGHTS_FILE} does not fit plugin '{plugin.name}' with the card's options ({problem}); "
        "was it exported by a different plugin version?"
    )

