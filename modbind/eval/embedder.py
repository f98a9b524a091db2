"""Embeddings for evaluation: the aligned model's items, the frozen anchor's texts and images, cached.

One :class:`Embedder` serves every task of a run, so a clip embedded for retrieval is not embedded again
for zero-shot classification. The frozen towers' outputs also persist on disk (captions in the anchor's
:class:`~modbind.anchor.CaptionCache`, images in :class:`ImageEmbeddingCache`), keyed by the anchor's
identity, so re-running an evaluation never re-embeds a caption or picture.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from modbind.atomic import atomic_path
from modbind.errors import ModbindError, exception_reason

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
DECODE_ERRORS = (ModbindError, OSError, ValueError, RuntimeError, EOFError)
"""What a broken input file raises while decoding: the file is skipped and listed, the run goes on."""


@dataclass
class Failure:
    """An input that could not be read, with the reason from its decoder."""

    key: str
    reason: str


def default_cache_dir() -> Path:
    """``$MODBIND_CACHE_DIR/eval`` or the platform's user cache folder."""
    env = os.environ.get("MODBIND_CACHE_DIR")
    if env:
        return Path(env) / "eval"
    import platformdirs

    return Path(platformdirs.user_cache_dir("modbind")) / "eval"


class ImageEmbeddingCache:
    """Image embeddings of one anchor keyed by the sha256 of the image file's bytes.

    Each write adds an immutable safetensors shard (temp file + rename) holding its keys in the metadata,
    so concurrent evaluations never see a half-written file.
    """

    def __init__(self, root: Path | None, anchor_identity: str):
        """``root=None`` keeps embeddings in memory only (nothing written)."""
        self.folder = Path(root) / _slug(anchor_identity) if root is not None else None
        self._rows: dict[str, Tensor] = {}
        if self.folder is not None:
            for shard in sorted(self.folder.glob("images-*.safetensors")):
                self._load_shard(shard)

    def _load_shard(self, path: Path) -> None:
        try:
            with safe_open(str(path), framework="pt") as handle:
                keys = json.loads((handle.metadata() or {}).get("keys", "[]"))
                embeddings = handle.get_tensor("embeddings")
        except (OSError, SafetensorError, ValueError):
            return  # a foreign or damaged shard is ignored; its images are simply embedded again
        if len(keys) == len(embeddings):
            self._rows.update(zip(keys, embeddings))

    def get(self, key: str) -> Tensor | None:
        return self._rows.get(key)

    def add(self, keys: Sequence[str], embeddings: Tensor) -> None:
        self._rows.update(zip(keys, embeddings))
        if not keys or self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"images-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
        with atomic_path(self.folder / name) as tmp:
            save_file({"embeddings": embeddings.contiguous()}, str(tmp), metadata={"keys": json.dumps(list(keys))})


def _slug(identity: str) -> str:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', identity)[:48]}-{digest}"


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_image(path: Path) -> Any:
    """An RGB PIL image; raises a decode error (listed by callers) when the file is not a readable image."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


class Embedder:
    """Embeds items with the aligned model and texts/images with its frozen anchor, with caches.

    ``model`` may be None for anchor-only baselines; then ``anchor`` must be given.
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
        self._anchor = anchor
        self.batch_size = batch_size
        self.progress = progress
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._items: dict[str, Tensor] = {}
        self._texts: dict[str, Tensor] = {}
        self._images: ImageEmbeddingCache | None = None
        self._captions: Any | None = None

    @property
    def anchor(self) -> Any:
        if self._anchor is None:
            self._anchor = self.model.anchor
        return self._anchor

    @property
    def modality(self) -> str:
        return self.require_model().plugin.modality

    def require_model(self) -> Any:
        if self.model is None:
            raise ModbindError("this task embeds the new modality: pass an exported MODEL (or --untrained --plugin P)")
        return self.model

    # --------------------------------------------------------------------------------------- items

    def items(self, paths: Sequence[Path]) -> tuple[Tensor, list[int], list[Failure]]:
        """Embeddings of the readable items among ``paths``, their indices, and the unreadable ones."""
        model = self.require_model()
        todo = [i for i, p in enumerate(paths) if str(p) not in self._items]
        failures: dict[int, Failure] = {}
        with tqdm(total=len(todo), desc=f"embedding {model.plugin.modality}", unit="item",
                  disable=not self.progress or not todo) as bar:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                decoded, keys = [], []
                for index in chunk:
                    try:
                        decoded.append(model.plugin.load_item(Path(paths[index]), model.options))
                        keys.append(str(paths[index]))
                    except DECODE_ERRORS as err:
                        failures[index] = Failure(str(paths[index]), _reason(err))
                if decoded:
                    self._encode_items(model, decoded, keys, failures, {str(paths[i]): i for i in chunk})
                bar.update(len(chunk))
        kept = [i for i in range(len(paths)) if i not in failures and str(paths[i]) in self._items]
        return self._stack([self._items[str(paths[i])] for i in kept]), kept, list(failures.values())

    def _encode_items(self, model: Any, decoded: list[Any], keys: list[str], failures: dict[int, Failure],
                      index_of: dict[str, int]) -> None:
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
                failures[index_of[key]] = Failure(key, _reason(err))

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
        cache = self._image_cache()
        found: dict[int, Tensor] = {}
        pending: list[tuple[int, str, Any]] = []
        failures: list[Failure] = []
        for index, path in enumerate(tqdm(paths, desc="reading images", unit="image", disable=not self.progress)):
            try:
                key = file_digest(Path(path))
                hit = cache.get(key)
                if hit is not None:
                    found[index] = hit
                    continue
                pending.append((index, key, load_image(Path(path))))
            except DECODE_ERRORS as err:
                failures.append(Failure(str(path), _reason(err)))
        if pending:
            embedded = self.anchor.encode_image([p[2] for p in pending], batch_size=self.batch_size,
                                                progress=self.progress)
            cache.add([p[1] for p in pending], embedded)
            found.update({p[0]: e for p, e in zip(pending, embedded)})
        kept = sorted(found)
        return self._stack([found[i] for i in kept]), kept, failures

    def _image_cache(self) -> ImageEmbeddingCache:
        if self._images is None:
            root = self.cache_dir / "images" if self.cache_dir is not None else None
            self._images = ImageEmbeddingCache(root, self.anchor.identity)
        return self._images

    def _stack(self, rows: list[Tensor]) -> Tensor:
        if rows:
            return torch.stack(rows).float()
        dim = self.model.dim if self.model is not None else self.anchor.dim
        return torch.empty(0, dim)


def _reason(err: BaseException) -> str:
    text = exception_reason(err)
    return f"{type(err).__name__}: {text}" if not isinstance(err, ModbindError) else text
