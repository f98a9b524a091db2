"""The exported, aligned model: encoder + head + temperature as safetensors and a JSON card.

``modbind.load(path)`` returns an :class:`AlignedModel`; training exports one, evaluation and embedding
only ever see one. The frozen anchor is referenced by the card (config + identity) and loaded lazily, so
encoding a modality never pays for the text tower.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from modbind.atomic import atomic_path, write_json_atomic
from modbind.config import AnchorConfig
from modbind.contracts import AnchorProvider, EncoderOptions, EncoderPlugin
from modbind.errors import CheckpointError, NonFiniteError
from modbind.model.aligned import AlignedEncoder
from modbind.model.card import CARD_FILE, CARD_FORMAT, WEIGHTS_FILE, make_card, read_card
from modbind.model.head import HeadKind
from modbind.model.lora import merge_lora_

if TYPE_CHECKING:  # pragma: no cover
    from modbind.plugins import Registry


class AlignedModel:
    """A trained (or untrained, for chance-level controls) encoder in the anchor's space.

    ``encode`` embeds items of the plugin's modality; ``encode_<modality>`` (e.g. ``encode_audio``) is the
    same method under the modality's name. ``encode_text``/``encode_image`` use the frozen anchor.
    """

    def __init__(
        self,
        plugin: EncoderPlugin[Any],
        options: EncoderOptions,
        model: AlignedEncoder,
        card: dict[str, Any],
        *,
        anchor: Any | None = None,
        anchor_provider: AnchorProvider | None = None,
        anchor_config: AnchorConfig | None = None,
        device: str = "cpu",
    ):
        """``anchor_config`` loads the anchor from elsewhere than the card says (e.g. its folder moved); the
        anchor found there must still have the identity the model was aligned to."""
        self.plugin = plugin
        self.options = options
        self.model = model.to(device).eval()
        self.card = card
        self.device = torch.device(device)
        self._anchor = anchor
        self._anchor_provider = anchor_provider
        self._anchor_config = anchor_config or AnchorConfig.model_validate(card["anchor"])

    def __getattr__(self, name: str) -> Any:
        plugin = self.__dict__.get("plugin")
        if plugin is not None and name == f"encode_{plugin.modality}":
            return self.encode
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def modality(self) -> str:
        return self.plugin.modality

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
    def anchor_identity(self) -> str | None:
        return self.card.get("anchor_identity")

    @property
    def anchor(self) -> Any:
        """The frozen anchor named by the card, loaded on first use and checked against its identity."""
        if self._anchor is None:
            from modbind.anchor import load_anchor

            if self._anchor_provider is None:
                raise CheckpointError("this model was built without an anchor provider; load it with modbind.load")
            anchor = load_anchor(self._anchor_config, self._anchor_provider, device=str(self.device))
            expected = self.anchor_identity
            if expected and anchor.identity != expected:
                raise CheckpointError(
                    f"the anchor loaded from {self._anchor_config.model} is '{anchor.identity}' but this model was "
                    f"aligned to '{expected}'; load it with the original anchor (modbind.load(path, anchor=...), "
                    "or --anchor on the command line)"
                )
            self._anchor = anchor
        return self._anchor

    def use_anchor(self, anchor: Any) -> None:
        """Share an anchor loaded elsewhere (a bundle's); it must be the one this model was aligned to."""
        expected = self.anchor_identity
        if expected and anchor.identity != expected:
            raise CheckpointError(f"this {self.modality} model was aligned to '{expected}', not to the anchor "
                                  f"'{anchor.identity}' it was handed")
        self._anchor = anchor

    @torch.inference_mode()
    def encode(self, items: Sequence[Any], batch_size: int = 32, progress: bool = False, **hints: Any) -> Tensor:
        """L2-normalised embeddings (N, dim) on CPU, using the plugin's deterministic evaluation policy.

        Paths (``str``/``Path``) are decoded with ``plugin.load_item``; anything else is an in-memory item
        that ``plugin.as_item`` accepts, with ``hints`` such as ``sample_rate=44100`` for bare waveforms.
        One path on its own is one item (not a sequence of characters).
        """
        if isinstance(items, (str, os.PathLike)):
            items = [items]
        outputs: list[Tensor] = []
        starts = range(0, len(items), batch_size)
        for start in tqdm(starts, desc="encode", unit="batch", disable=not progress):
            chunk = items[start : start + batch_size]
            prepared = [self.plugin.preprocess(self._item(item, hints), self.options, train=False) for item in chunk]
            batch = {key: torch.stack([p[key] for p in prepared]).to(self.device) for key in prepared[0]}
            features = self.plugin.featurize(batch, self.options)
            outputs.append(self.model(features).float().cpu())
        if not outputs:
            return torch.empty(0, self.dim)
        return torch.cat(outputs)

    def encode_text(self, texts: str | Sequence[str], batch_size: int = 256) -> Tensor:
        """(N, dim) normalised embeddings from the anchor's frozen text tower; one string is one text."""
        return self.anchor.encode_text([texts] if isinstance(texts, str) else list(texts), batch_size=batch_size)

    def encode_image(self, images: Sequence[Any] | Tensor, batch_size: int = 64) -> Tensor:
        """(N, dim) normalised embeddings from the anchor's frozen image tower: PIL images, or an (N, 3, H, W)
        batch already transformed by ``anchor.image_transform`` (passed on as is, never transformed twice)."""
        return self.anchor.encode_image(images if isinstance(images, Tensor) else list(images), batch_size=batch_size)

    def save(self, directory: Path) -> Path:
        """Write ``model.safetensors`` then ``card.json`` (each atomically; the card last marks completion).

        Weights holding NaN or infinity are refused: such a model embeds everything as NaN.
        """
        directory = Path(directory)
        state = exportable_state_dict(self.model)
        broken = [name for name, value in state.items() if value.is_floating_point() and not value.isfinite().all()]
        if broken:
            raise NonFiniteError(f"refusing to export to {directory}: {len(broken)} weight tensor(s) hold NaN or "
                                 f"infinite values (first: {broken[0]}); the model diverged")
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": CARD_FORMAT})
        write_json_atomic(directory / CARD_FILE, self.card)
        return directory

    def _item(self, item: Any, hints: dict[str, Any]) -> Any:
        if isinstance(item, (str, os.PathLike)):
            return self.plugin.load_item(Path(item), self.options)
        return self.plugin.as_item(item, self.options, **hints)


def exportable_state_dict(model: AlignedEncoder) -> dict[str, Tensor]:
    """Plain fp32 weights: LoRA adapters merged into their base layers, so the card's plugin rebuilds it."""
    plain = copy.deepcopy(model)
    merge_lora_(plain)
    return {k: v.detach().float().contiguous().cpu() for k, v in plain.state_dict().items()}


def build_aligned_model(
    plugin: EncoderPlugin[Any],
    options: EncoderOptions,
    anchor_config: AnchorConfig,
    anchor_provider: AnchorProvider,
    *,
    head: HeadKind = "linear",
    seed: int = 0,
    device: str = "cpu",
) -> AlignedModel:
    """An untrained encoder + head in the anchor's space: the chance-level control for evaluation."""
    from modbind.anchor import load_anchor

    loaded_anchor = load_anchor(anchor_config, anchor_provider, device=device)
    torch.manual_seed(seed)
    model = AlignedEncoder(plugin.build_encoder(options), loaded_anchor.dim, head=head,
                           logit_scale=loaded_anchor.logit_scale)
    card = make_card(plugin, options, anchor_config, loaded_anchor.identity, model, anchor_provider=anchor_provider,
                     metrics={"trained": False})
    return AlignedModel(plugin, options, model, card, anchor=loaded_anchor, anchor_provider=anchor_provider,
                        device=device)


def load_aligned_model(path: Path | str, registry: Registry, device: str = "cpu",
                       anchor: AnchorConfig | None = None) -> AlignedModel:
    """Rebuild an exported model from its folder (``card.json`` + ``model.safetensors``).

    ``registry`` supplies the card's plugin and the provider of its anchor (``modbind.load`` passes the
    installed plugins); ``anchor`` replaces the card's anchor config (same identity required).
    """
    directory = Path(path)
    card = read_card(directory)
    plugin = registry.encoder(card["plugin"])
    options = plugin.options(card["plugin_options"])
    weights_path = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{weights_path}: cannot read the exported weights ({err}); re-export the model") from None
    model = _rebuild(plugin, options, card, state, directory)
    config = anchor or AnchorConfig.model_validate(card["anchor"])
    return AlignedModel(plugin, options, model, card, anchor_provider=registry.anchor_provider(config.model),
                        anchor_config=config, device=device)


def _rebuild(plugin: EncoderPlugin[Any], options: EncoderOptions, card: dict[str, Any], state: dict[str, Tensor],
             directory: Path) -> AlignedEncoder:
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
