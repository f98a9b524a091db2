"""Embedding caches: every caption (and every evaluated picture) goes through a frozen tower once, ever.

Layout (one folder per anchor identity under ``root``; captions and pictures use separate roots)::

    root/<identity-slug>-<hash>/
        cache.json                        identity, dim and logit scale: what training needs from the
                                          anchor when every caption is cached (it then never loads it)
        shard-<time>-<pid>-<rand>.safetensors   "embeddings" (n, dim) float32, "keys" (n, 32) uint8

A key is the sha256 of the exact caption text (or of a picture file's bytes); the folder is the anchor
identity, so an entry is addressed by (identity, content). Shards are immutable and appear atomically (temp file + rename), each
carrying its own key index, so the set of finished shard files *is* the index: there is no shared
mutable file for concurrent readers (DataLoader workers, ranks) to see half-written. Building writes a
shard every ``shard_rows`` captions, so an interrupted build resumes where it stopped; a file lock
serialises concurrent builders. Readers memory-map shards and copy only the rows they ask for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from modbind.atomic import atomic_path, write_json_atomic
from modbind.errors import ConfigError, DataError

FORMAT = "modbind.caption_cache/1"
KEY_BYTES = 32
SHARD_GLOB = "shard-*.safetensors"
_NUMPY_DTYPES = {"F32": np.float32, "U8": np.uint8}


class CacheMiss(DataError):
    """Embeddings were asked for that the cache does not hold (build it first)."""


class CaptionCacheMiss(CacheMiss):
    """Captions were asked for that the cache does not hold (build it first)."""


def caption_key(text: str) -> bytes:
    """The content address of a caption within one anchor's cache: sha256 of its exact UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass
class _Shard:
    path: Path
    embeddings: np.ndarray
    keys: np.ndarray


class _Index:
    """Sorted keys of all loaded shards, for vectorised lookups (32 bytes per caption, no Python dict)."""

    def __init__(self, shards: list[_Shard]):
        self.shards = shards
        counts = [len(s.keys) for s in shards]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if shards:
            all_keys = np.concatenate([np.ascontiguousarray(s.keys).view(f"S{KEY_BYTES}").reshape(-1) for s in shards])
        else:
            all_keys = np.empty(0, dtype=f"S{KEY_BYTES}")
        self.order = np.argsort(all_keys, kind="stable")
        self.sorted_keys = all_keys[self.order]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Global row of each key, -1 where absent."""
        if len(self.sorted_keys) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        pos = np.searchsorted(self.sorted_keys, keys)
        pos_clipped = np.minimum(pos, len(self.sorted_keys) - 1)
        hit = self.sorted_keys[pos_clipped] == keys
        return np.where(hit, self.order[pos_clipped], -1).astype(np.int64)

    def gather(self, rows: np.ndarray, dim: int) -> np.ndarray:
        out = np.empty((len(rows), dim), dtype=np.float32)
        shard_ids = np.searchsorted(self.offsets, rows, side="right") - 1
        for shard_id in np.unique(shard_ids):
            mask = shard_ids == shard_id
            local = rows[mask] - self.offsets[shard_id]
            out[mask] = self.shards[shard_id].embeddings[local]
        return out


class EmbeddingCache:
    """Frozen-tower embeddings on disk, keyed by (anchor identity, 32-byte content digest).

    The one cache implementation: captions key by the sha256 of their text (:class:`CaptionCache`),
    pictures by the sha256 of their file's bytes (evaluation's image cache). ``root`` separates kinds.
    """

    def __init__(self, root: Path, anchor_identity: str, *, shard_rows: int = 4096):
        if not anchor_identity:
            raise ConfigError(f"{type(self).__name__} needs the anchor identity (modbind.anchor.anchor_identity)")
        self.root = Path(root)
        self.anchor_identity = anchor_identity
        self.shard_rows = shard_rows
        self.folder = self.root / _folder_name(anchor_identity)
        self._index: _Index | None = None
        self._loaded: dict[str, _Shard] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.folder)!r}, identity={self.anchor_identity!r})"

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are reopened lazily in the receiving process (DataLoader workers, spawn).
        return {"root": self.root, "anchor_identity": self.anchor_identity, "shard_rows": self.shard_rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["anchor_identity"], shard_rows=state["shard_rows"])  # type: ignore[misc]

    def __len__(self) -> int:
        """Entries held (an entry embedded twice by racing builders counts twice)."""
        return len(self._refresh())

    @property
    def dim(self) -> int | None:
        """Embedding width, or None while the cache is empty."""
        index = self._refresh()
        return int(index.shards[0].embeddings.shape[1]) if index.shards else None

    def rows(self, keys: Sequence[bytes], *, refresh: bool = True) -> np.ndarray:
        """Global row of each key, -1 where absent."""
        index = self._refresh() if refresh or self._index is None else self._index
        return index.find(np.array(list(keys), dtype=f"S{KEY_BYTES}"))

    @property
    def logit_scale(self) -> float | None:
        """The anchor's logit scale as recorded when the cache was built (None for an empty or older cache)."""
        meta = self.folder / "cache.json"
        if not meta.is_file():
            return None
        value = json.loads(meta.read_text(encoding="utf-8")).get("logit_scale")
        return float(value) if value is not None else None

    def fetch(self, keys: Sequence[bytes]) -> Tensor:
        """(N, dim) float32 embeddings of keys known to be present (see :meth:`rows`)."""
        rows = self.rows(keys, refresh=False)
        if (rows < 0).any():
            rows = self.rows(keys)  # another process may have added shards since
        if (rows < 0).any():
            raise CacheMiss(f"embedding cache {self.folder} lacks {int((rows < 0).sum())} of {len(rows)} entries")
        if not len(rows):
            return torch.empty(0, self.dim or 0, dtype=torch.float32)
        return torch.from_numpy(self._refresh().gather(rows, self.dim or 0))

    def add(self, keys: Sequence[bytes], embeddings: Tensor, *, logit_scale: float | None = None) -> None:
        """Store embeddings under their keys: one immutable shard per ``shard_rows`` rows."""
        if not len(keys):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_meta(int(embeddings.shape[1]), logit_scale)
        for start in range(0, len(keys), self.shard_rows):
            self._write_shard(keys[start : start + self.shard_rows], embeddings[start : start + self.shard_rows])
        self._refresh()

    @contextlib.contextmanager
    def build_lock(self) -> Iterator[None]:
        """An exclusive advisory lock on the cache folder while building (no-op where flock is missing)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        with open(self.folder / ".build.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # ---------------------------------------------------------------------------------- internals

    def _refresh(self) -> _Index:
        """Load shards that appeared since the last look (cheap when none did)."""
        paths = sorted(self.folder.glob(SHARD_GLOB)) if self.folder.is_dir() else []
        new = [p for p in paths if p.name not in self._loaded]
        if self._index is not None and not new:
            return self._index
        for path in new:
            self._loaded[path.name] = _open_shard(path, self.anchor_identity)
        self._index = _Index([self._loaded[p.name] for p in paths if p.name in self._loaded])
        return self._index

    def _write_shard(self, keys: Sequence[bytes], embeddings: Tensor) -> Path:
        from safetensors.torch import save_file

        key_tensor = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8)
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
        target = self.folder / name
        with atomic_path(target) as tmp:
            save_file(
                {"embeddings": embeddings.float().contiguous(),
                 "keys": key_tensor.reshape(len(keys), KEY_BYTES).contiguous()},
                str(tmp),
                metadata={"format": FORMAT, "identity": self.anchor_identity},
            )
        return target

    def _write_meta(self, dim: int, logit_scale: float | None) -> None:
        meta = self.folder / "cache.json"
        if meta.is_file():
            recorded = json.loads(meta.read_text(encoding="utf-8"))
            if recorded.get("dim") != dim:
                raise DataError(f"{meta}: cache holds {recorded.get('dim')}-d embeddings but the anchor gives {dim}-d")
            if recorded.get("logit_scale") is not None or logit_scale is None:
                return
        write_json_atomic(meta, {"format": FORMAT, "identity": self.anchor_identity, "dim": dim,
                                 "logit_scale": logit_scale})


class CaptionCache(EmbeddingCache):
    """Frozen-text-tower embeddings of captions, keyed by (anchor identity, exact text).

    Typical use: ``cache = CaptionCache(root, anchor_identity(cfg, provider))``;
    ``cache.ensure(captions, lambda: load_anchor(cfg, provider))`` once (rank 0 or the CLI), then
    ``cache.get(batch_captions)`` anywhere, without the anchor in memory.
    """

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and bool(self.rows([caption_key(text)])[0] >= 0)

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct texts (first-seen order) not yet in the cache."""
        unique = list(dict.fromkeys(_check_texts(texts)))
        rows = self.rows([caption_key(t) for t in unique])
        return [t for t, row in zip(unique, rows) if row < 0]

    def ensure(
        self,
        texts: Sequence[str],
        anchor_loader: Callable[[], Any],
        batch_size: int = 256,
        progress: bool = True,
    ) -> int:
        """Embed the texts the cache lacks, writing a shard every ``shard_rows`` captions; returns how many
        this call embedded.

        ``anchor_loader`` is only called when something is missing, so a warm cache never loads (or
        runs) the text tower. Safe to call from several processes at once: one builds, the others wait
        and then find nothing left to do (and return 0).
        """
        if not self.missing(texts):
            return 0
        with self.build_lock():
            todo = self.missing(texts)
            if not todo:
                return 0
            anchor = anchor_loader()
            if anchor.identity != self.anchor_identity:
                raise ConfigError(
                    f"caption cache {self.folder} is for anchor {self.anchor_identity}, "
                    f"but the loader gave {anchor.identity}; use CaptionCache(root, anchor.identity)"
                )
            with tqdm(total=len(todo), desc="caption cache", unit="caption", disable=not progress) as bar:
                for start in range(0, len(todo), self.shard_rows):
                    chunk = todo[start : start + self.shard_rows]
                    self.add([caption_key(t) for t in chunk], anchor.encode_text(chunk, batch_size=batch_size),
                             logit_scale=getattr(anchor, "logit_scale", None))  # absent on text-only stand-ins
                    bar.update(len(chunk))
        return len(todo)

    def get(self, texts: Sequence[str]) -> Tensor:
        """(N, dim) float32 embeddings in the order of ``texts``; raises :class:`CaptionCacheMiss` if any is absent."""
        texts = _check_texts(texts)
        keys = [caption_key(t) for t in texts]
        rows = self.rows(keys, refresh=False)
        if (rows < 0).any():
            rows = self.rows(keys)  # another process may have added shards since
        absent = [t for t, row in zip(texts, rows) if row < 0]
        if absent:
            raise CaptionCacheMiss(
                f"caption cache {self.folder} lacks {len(set(absent))} of {len(set(texts))} captions "
                f"(e.g. {absent[0]!r}); build it first with `modbind data embed-text MANIFEST --cache {self.root}` "
                "or CaptionCache.ensure(...)"
            )
        return self.fetch(keys)


def _open_shard(path: Path, identity: str) -> _Shard:
    """Memory-map a shard's tensors straight from the safetensors layout (8-byte header size, JSON header, data)."""
    try:
        with path.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_size))
        base = 8 + header_size
        recorded = header.get("__metadata__", {}).get("identity")
        if recorded != identity:
            raise DataError(f"{path}: written for anchor {recorded}, not {identity}; remove the file")
        arrays = {}
        for name in ("embeddings", "keys"):
            entry = header[name]
            begin, _ = entry["data_offsets"]
            arrays[name] = np.memmap(
                path, dtype=_NUMPY_DTYPES[entry["dtype"]], mode="r", offset=base + begin, shape=tuple(entry["shape"])
            )
    except (OSError, KeyError, ValueError, struct.error) as err:
        raise DataError(f"{path}: unreadable caption-cache shard ({err}); delete it and rebuild") from None
    if arrays["keys"].shape != (arrays["embeddings"].shape[0], KEY_BYTES):
        raise DataError(f"{path}: keys and embeddings disagree in length; delete it and rebuild")
    return _Shard(path, arrays["embeddings"], arrays["keys"])


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("pass a list of captions, not a single string")
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise DataError(f"caption cache: captions must be strings, got {type(text).__name__} {text!r}")
    return texts


def _folder_name(identity: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", identity.split("|")[0])[:48].strip("_") or "anchor"
    return f"{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
