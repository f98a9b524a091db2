"""Embeddings for evaluation: the aligned model's items, the frozen anchor's texts and images, cached.

One :class:`Embedder` serves every task of a run, so an item embedded for retrieval is not embedded again
for zero-shot classification. The frozen towers' outputs also persist on disk in the anchor's
:class:`~modbind.anchor.EmbeddingCache` (captions keyed by their text, pictures by their file's bytes),
per anchor identity, so re-running an evaluation never re-embeds a caption or picture.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from modbind.cache import cache_root
from modbind.errors import ConfigError, ModbindError, exception_reason

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
DECODE_ERRORS = (ModbindError, OSError, ValueError, RuntimeError, EOFError)
"""What a broken input file raises while decoding: the file is skipped and listed, the run goes on."""


@dataclass
class Failure:
    """An input that could not be read, with the reason from its decoder."""

    key: str
    reason: str


def default_cache_dir() -> Path:
    """``eval/`` under the cache root (``$MODBIND_CACHE_DIR`` or the platform's user cache folder)."""
    return cache_root() / "eval"


def file_digest(path: Path) -> bytes:
    """The content address of a picture in the image cache: sha256 of the file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).digest()


def load_image(path: Path) -> Any:
    """An RGB PIL image; raises a decode error (listed by callers) when the file is not a readable image."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


class Embedder:
    """Embeds items with the aligned model and texts/images with its frozen anchor, with caches.

    ``model`` is an aligned model or a bundle of several (one per modality, ``members``); it may be None
    for anchor-only baselines, and then ``anchor`` must be given.
    """

    def __init__(
        self,
        model: Any | None,
        *,
        anchor: Any | None = None,
        batch_size: int = 32,
        progress: bool = True,
        cache_dir: Path | None = None,
    ):
        if model is None and anchor is None:
            raise ModbindError("evaluation needs a model or, for anchor baselines, an anchor (--anchor)")
        self.model = model
        self.models: dict[str, Any] = models_by_modality(model)
        """The model that encodes each modality (one entry unless ``model`` is a bundle)."""
        self._anchor = anchor
        self.batch_size = batch_size
        self.progress = progress
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._items: dict[tuple[str, str], Tensor] = {}
        self._texts: dict[str, Tensor] = {}
        self._images: Any | None = None
        self._image_memory: dict[bytes, Tensor] = {}
        self._captions: Any | None = None

    @property
    def anchor(self) -> Any:
        if self._anchor is None:
            self._anchor = self.model.anchor
        return self._anchor

    @property
    def modalities(self) -> list[str]:
        return list(self.models)

    @property
    def modality(self) -> str:
        """The model's modality (for a bundle: its only one, else an error asking to choose)."""
        return self.default_modality()

    def default_modality(self, besides: str | None = None) -> str:
        """The modality items are read as when a task names none: the only one (other than ``besides``)."""
        self.require_model()
        candidates = [m for m in self.models if m != besides]
        if len(candidates) != 1:
            raise ConfigError(f"the model encodes {', '.join(self.models)}: choose which modality the items are "
                              "(--modality NAME, or 'modality:' in a suite task)")
        return candidates[0]

    def model_for(self, modality: str | None = None) -> Any:
        """The aligned model that encodes ``modality`` (default: :meth:`default_modality`)."""
        self.require_model()
        modality = modality or self.default_modality()
        if modality not in self.models:
            raise ConfigError(f"the model encodes {', '.join(self.models)}, not '{modality}'")
        return self.models[modality]

    def require_model(self) -> Any:
        if self.model is None:
            raise ModbindError("this task embeds the new modality: pass an exported MODEL (or --untrained --plugin P)")
        return self.model

    # --------------------------------------------------------------------------------------- items

    def items(self, paths: Sequence[Path], modality: str | None = None) -> tuple[Tensor, list[int], list[Failure]]:
        """Embeddings of the readable ``modality`` items among ``paths``, their indices, and the unreadable ones."""
        model = self.model_for(modality)
        modality = model.plugin.modality
        key_of = [(modality, str(p)) for p in paths]
        todo = [i for i, key in enumerate(key_of) if key not in self._items]
        failures: dict[int, Failure] = {}
        with tqdm(total=len(todo), desc=f"embedding {modality}", unit="item",
                  disable=not self.progress or not todo) as bar:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                decoded, keys = [], []
                for index in chunk:
                    try:
                        decoded.append(model.plugin.load_item(Path(paths[index]), model.options))
                        keys.append(key_of[index])
                    except DECODE_ERRORS as err:
                        failures[index] = Failure(str(paths[index]), _reason(err))
                if decoded:
                    self._encode_items(model, decoded, keys, failures, {key_of[i]: i for i in chunk})
                bar.update(len(chunk))
        kept = [i for i in range(len(paths)) if i not in failures and key_of[i] in self._items]
        return self._stack([self._items[key_of[i]] for i in kept]), kept, list(failures.values())

    def _encode_items(self, model: Any, decoded: list[Any], keys: list[tuple[str, str]],
                      failures: dict[int, Failure], index_of: dict[tuple[str, str], int]) -> None:
        """Encode a batch; if one item breaks preprocessing, retry one by one so only that item is lost."""
        try:
            self._items.update(zip(keys, model.encode(decoded, batch_size=self.batch_size)))
            return
        except DECODE_ERRORS:
            pass
        for item, key in zip(decoded, keys):
            try:
                self._items[key] = model.encode([item], batch_size=1)[0]
            except DECODE_ERRORS as err:
                failures[index_of[key]] = Failure(key[1], _reason(err))

    # --------------------------------------------------------------------------------------- texts

    def texts(self, texts: Sequence[str]) -> Tensor:
        """(N, dim) anchor text embeddings, each distinct text embedded once (and cached on disk)."""
        unique = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if unique:
            cache = self._caption_cache()
            if cache is not None:
                cache.ensure(unique, lambda: self.anchor, batch_size=256, progress=self.progress)
                embedded = cache.get(unique)
            else:
                embedded = self.anchor.encode_text(unique, batch_size=256, progress=self.progress)
            self._texts.update(zip(unique, embedded))
        return self._stack([self._texts[t] for t in texts])

    def _caption_cache(self) -> Any | None:
        if self.cache_dir is None:
            return None
        if self._captions is None:
            from modbind.anchor import CaptionCache

            self._captions = CaptionCache(self.cache_dir / "captions", self.anchor.identity)
        return self._captions

    # -------------------------------------------------------------------------------------- images

    def images(self, paths: Sequence[Path]) -> tuple[Tensor, list[int], list[Failure]]:
        """Anchor image embeddings of the decodable files among ``paths`` (content-addressed cache)."""
        keys: dict[int, bytes] = {}
        failures: list[Failure] = []
        for index, path in enumerate(paths):
            try:
                keys[index] = file_digest(Path(path))
            except DECODE_ERRORS as err:
                failures.append(Failure(str(path), _reason(err)))
        found = {i: self._image_memory[k] for i, k in keys.items() if k in self._image_memory}
        cache = self._image_cache()
        lookup = [i for i in keys if i not in found]
        if cache is not None and lookup:
            present = [i for i, row in zip(lookup, cache.rows([keys[i] for i in lookup])) if row >= 0]
            if present:
                found.update(zip(present, cache.fetch([keys[i] for i in present])))
        pending: list[tuple[int, Any]] = []
        for index in tqdm([i for i in keys if i not in found], desc="reading images", unit="image",
                          disable=not self.progress):
            try:
                pending.append((index, load_image(Path(paths[index]))))
            except DECODE_ERRORS as err:
                failures.append(Failure(str(paths[index]), _reason(err)))
        if pending:
            embedded = self.anchor.encode_image([image for _, image in pending], batch_size=self.batch_size,
                                                progress=self.progress)
            if cache is not None:
                cache.add([keys[i] for i, _ in pending], embedded)
            found.update(zip([i for i, _ in pending], embedded))
        self._image_memory.update((keys[i], row) for i, row in found.items())
        kept = sorted(found)
        return self._stack([found[i] for i in kept]), kept, failures

    def _image_cache(self) -> Any | None:
        """The on-disk image cache of this anchor, or None with caching off."""
        if self._images is None and self.cache_dir is not None:
            from modbind.anchor import EmbeddingCache

            self._images = EmbeddingCache(self.cache_dir / "images", self.anchor.identity)
        return self._images

    def _stack(self, rows: list[Tensor]) -> Tensor:
        if rows:
            return torch.stack(rows).float()
        dim = self.model.dim if self.model is not None else self.anchor.dim
        return torch.empty(0, dim)


def models_by_modality(model: Any | None) -> dict[str, Any]:
    """``{modality: model}``: a bundle's members, or the one model under its modality (empty for None)."""
    if model is None:
        return {}
    members = getattr(model, "members", None)
    return dict(members) if members is not None else {model.plugin.modality: model}


def _reason(err: BaseException) -> str:
    text = exception_reason(err)
    return f"{type(err).__name__}: {text}" if not isinstance(err, ModbindError) else text
