"""The frozen anchor: a text-image model that embeds captions and images and can never be trained.

Frozen by construction: every parameter has ``requires_grad=False``, the towers stay in eval mode, all
encoding runs under ``torch.inference_mode``, and an :class:`Anchor` is not an ``nn.Module``, so it has
no ``.parameters()`` to hand to an optimizer and is never registered inside a trained module. A cheap
fingerprint of every frozen tensor lets the trainer prove it did not change (:meth:`assert_unchanged`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from modbind.anchor.fingerprint import tensor_fingerprint
from modbind.contracts import AnchorProvider
from modbind.errors import ModbindError


class AnchorChangedError(ModbindError):
    """The frozen anchor's weights (or its frozen state) changed since they were fingerprinted."""


class Anchor:
    """A frozen text-image space: ``encode_text``/``encode_image`` give L2-normalised float32 CPU tensors.

    ``identity`` (a hash of the weights, tokenizer and precision: content only, so a moved folder keeps it)
    keys the caption cache and ties exported models to their anchor; ``label`` names it for humans;
    ``logit_scale`` is the model's learned temperature as a multiplier (``exp`` of the stored log value).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[list[str]], Tensor],
        image_transform: Callable[[Any], Tensor],
        *,
        identity: str,
        label: str | None = None,
        device: str | torch.device = "cpu",
    ):
        self._model = model.to(device)
        self._model.requires_grad_(False)
        self._model.eval()
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.identity = identity
        self.label = label or identity
        self.device = torch.device(device)
        self.logit_scale = float(model.logit_scale.detach().float().exp().item())
        self.context_length: int = getattr(tokenizer, "context_length", None) or 77
        self._pad_id = _trimmable_pad_id(model)
        self.dim = self._embedding_dim()
        self._loaded_digests = self._digests()
        self._loaded_fingerprint = _combine(self._loaded_digests)

    def __repr__(self) -> str:
        return f"Anchor({self.label!r}, identity={self.identity!r}, dim={self.dim}, device={self.device})"

    @property
    def model(self) -> nn.Module:
        """The underlying frozen open_clip model (read it; never train it: the fingerprint will tell)."""
        return self._model

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> Tensor:
        """(N, dim) normalised text embeddings; texts are batched by length so padding costs little."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.empty(len(texts), self.dim, dtype=torch.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        self._keep_eval()
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="embedding captions", unit="batch", disable=not progress):
            rows = order[start : start + batch_size]
            tokens = self._trim_padding(self.tokenizer([texts[i] for i in rows])).to(self.device)
            features = self._model.encode_text(tokens)
            out[rows] = F.normalize(features.float(), dim=-1).cpu()
        return out

    @torch.inference_mode()
    def encode_image(self, images: Sequence[Any] | Tensor, batch_size: int = 64, progress: bool = False) -> Tensor:
        """(N, dim) normalised image embeddings from PIL images (or an already transformed (N, 3, H, W) batch)."""
        self._keep_eval()
        count = len(images)
        out = torch.empty(count, self.dim, dtype=torch.float32)
        dtype = next(self._model.visual.parameters()).dtype
        starts = range(0, count, batch_size)
        for start in tqdm(starts, desc="embedding images", unit="batch", disable=not progress):
            chunk = images[start : start + batch_size]
            pixels = chunk if isinstance(chunk, Tensor) else torch.stack([self.image_transform(im) for im in chunk])
            features = self._model.encode_image(pixels.to(self.device, dtype))
            out[start : start + len(chunk)] = F.normalize(features.float(), dim=-1).cpu()
        return out

    def fingerprint(self) -> str:
        """A digest of every frozen tensor (exact, order-independent checksum + strided sample)."""
        return _combine(self._digests())

    def assert_unchanged(self, fingerprint: str | None = None) -> None:
        """Raise :class:`AnchorChangedError` if the weights differ from ``fingerprint`` (default: as loaded).

        Also fails when anything re-enabled gradients or training mode, which is how accidental
        fine-tuning of a "frozen" tower usually starts.
        """
        unfrozen = [name for name, p in self._model.named_parameters() if p.requires_grad]
        if unfrozen:
            raise AnchorChangedError(
                f"anchor {self.identity}: {len(unfrozen)} parameters were unfrozen (requires_grad=True, e.g. "
                f"'{unfrozen[0]}'); the anchor must never be trained or handed to an optimizer"
            )
        expected = fingerprint or self._loaded_fingerprint
        digests = self._digests()
        if _combine(digests) == expected:
            return
        changed = [name for name, d in digests.items() if self._loaded_digests.get(name) != d]
        detail = f" (changed since loading: {', '.join(changed[:5])}{' …' if len(changed) > 5 else ''})" if changed else ""
        raise AnchorChangedError(
            f"anchor {self.identity}: frozen weights changed, fingerprint {expected[:12]} is now "
            f"{_combine(digests)[:12]}{detail}; something modified the anchor in place or trained it"
        )

    def _digests(self) -> dict[str, str]:
        return {name: tensor_fingerprint({name: t}) for name, t in self._model.state_dict().items()}

    def _keep_eval(self) -> None:
        if self._model.training:
            self._model.eval()

    def _embedding_dim(self) -> int:
        dim = getattr(getattr(self._model, "visual", None), "output_dim", None)
        if isinstance(dim, int):
            return dim
        with torch.inference_mode():
            return int(self._model.encode_text(self.tokenizer([""]).to(self.device)).shape[-1])

    def _trim_padding(self, tokens: Tensor) -> Tensor:
        """Drop all-padding columns at the end: HF text towers pool over the attention mask, so the
        result is unchanged while short captions no longer pay for the full context length."""
        if self._pad_id is None or tokens.numel() == 0:
            return tokens
        used = (tokens != self._pad_id).any(dim=0).nonzero()
        return tokens[:, : int(used.max()) + 1] if used.numel() else tokens


def _trimmable_pad_id(model: nn.Module) -> int | None:
    """The pad id of an HF text tower (whose output ignores padding), else None (no trimming)."""
    from open_clip.hf_model import HFTextEncoder

    text = getattr(model, "text", None)
    if isinstance(text, HFTextEncoder):
        pad = getattr(text.config, "pad_token_id", None)
        return int(pad) if pad is not None else None
    return None


def _combine(digests: dict[str, str]) -> str:
    import hashlib

    return hashlib.sha256("".join(f"{k}={v};" for k, v in sorted(digests.items())).encode()).hexdigest()


def load_anchor(config: Any, provider: AnchorProvider, device: str | None = None) -> Anchor:
    """Load the frozen anchor a recipe's ``anchor`` section describes, with the provider that handles it
    (``Registry.anchor_provider(config.model)`` at the edge).

    ``device`` defaults to ``config.device``. Offline only: missing weights raise one clear error
    naming the model, tag, where modbind looked and how to fetch them.
    """
    return provider.load(
        config.model,
        config.pretrained,
        cache_dir=config.cache_dir,
        device=device or config.device,
        precision=config.precision,
    )


def anchor_identity(config: Any, provider: AnchorProvider) -> str:
    """The anchor's identity string without building it (hashes files only), for caption-cache lookups.

    Providers without an ``identity`` method fall back to loading the anchor.
    """
    identity = getattr(provider, "identity", None)
    if callable(identity):
        return identity(config.model, config.pretrained, cache_dir=config.cache_dir, precision=config.precision)
    return load_anchor(config, provider).identity
