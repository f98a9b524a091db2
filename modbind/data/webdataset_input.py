"""LAION-CLAP-style webdataset tars (``<key>.flac`` + ``<key>.json``) as input to ``modbind data pack``.

The JSON follows LAION's audio-dataset layout: ``text`` holds the captions (a list of strings, or one
string), ``tag`` the class labels and tags, ``original_data`` everything else. Each sample becomes a
manifest entry (``text`` → captions, ``tag`` → labels, both in one language; ``original_data`` → meta)
whose item is the member with one of the plugin's file endings, decoded by the plugin as a file would be.
The tars are read with the ``webdataset`` library (the optional extra ``modbind[webdataset]``); a sample
that cannot become an item, or the rest of a damaged tar, is skipped and counted in the pack report.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from modbind.contracts import EncoderOptions, EncoderPlugin
from modbind.data.manifest import ManifestEntry
from modbind.data.shards import ItemSource, MemberBytes, PackReport, Unusable, list_shards, pack_samples
from modbind.errors import ConfigError, exception_reason

INSTALL_HINT = "pip install 'modbind[webdataset]'"
SIZES_FILE = "sizes.json"
"""LAION's per-folder sample counts (``{"name0.tar": 512, ...}``), used for the progress bar when present."""
_SAFE_KEY = re.compile(r"[^\x00/\\]+(?:/[^\x00/\\]+)*")


def require_webdataset() -> Any:
    """The ``webdataset`` module, or one clear error saying how to install it."""
    try:
        import webdataset
    except ImportError:
        raise ConfigError(f"reading webdataset tars needs the 'webdataset' package: {INSTALL_HINT}") from None
    return webdataset


def pack_webdataset(
    pattern: str | Path,
    out_dir: Path,
    plugin: EncoderPlugin[Any],
    options: EncoderOptions,
    *,
    language: str = "en",
    **kwargs: Any,
) -> PackReport:
    """Pack the samples of the webdataset tars ``pattern`` names (a tar, a folder, a glob or a brace
    range) into modbind shards; ``kwargs`` are :func:`~modbind.data.shards.pack_samples`' options."""
    wds = require_webdataset()
    shards = list_shards(pattern)
    out_dir = Path(out_dir)
    identity = {"input": "webdataset", "language": language, "shards": [p.name for p in shards],
                "shards_sha256": _fingerprint(shards)}
    samples = webdataset_samples(wds, shards, plugin.file_extensions, language, out_dir)
    return pack_samples(samples, out_dir, plugin, options, input_identity=identity, total=_sample_count(shards),
                        **kwargs)


def webdataset_samples(wds: Any, shards: Sequence[Path], extensions: Sequence[str], language: str,
                       scratch: Path) -> Iterator[tuple[ManifestEntry, ItemSource]]:
    """(entry, item source) per sample in tar order; a damaged tar yields one unusable pseudo-sample."""
    damaged: list[str] = []

    def note(err: Exception) -> bool:
        damaged.append(exception_reason(err))
        return True  # skip what cannot be read and go on

    pipeline = wds.DataPipeline(wds.SimpleShardList([str(p) for p in shards]), wds.tarfile_to_samples(handler=note))
    for sample in pipeline:
        yield from _damage(damaged)
        yield sample_entry(sample, extensions, language, scratch)
    yield from _damage(damaged)


def _damage(damaged: list[str]) -> Iterator[tuple[ManifestEntry, ItemSource]]:
    while damaged:
        reason = damaged.pop(0)
        yield ManifestEntry(id="(damaged tar)", path="(damaged tar)"), Unusable(f"unreadable tar data: {reason}")


def sample_entry(sample: dict[str, Any], extensions: Sequence[str], language: str,
                 scratch: Path) -> tuple[ManifestEntry, ItemSource]:
    """One webdataset sample as a manifest entry and the bytes of its item (or why it cannot be used)."""
    key, shard = str(sample.get("__key__", "")), Path(str(sample.get("__url__", "")))
    where = f"{shard.name}/{key}"
    entry = ManifestEntry(id=f"{shard.stem}/{key}" if key else "(no key)", path=where or "(no key)")
    if not _SAFE_KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        return entry, Unusable(f"member name {key!r} is not a plain relative name; skipped")
    members = {name: data for name, data in sample.items() if not name.startswith("__")}
    if "json" not in members:
        return entry, Unusable(f"{where}: no .json member with the captions")
    try:
        meta = json.loads(bytes(members["json"]).decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return entry, Unusable(f"{where}.json is not valid JSON ({exception_reason(err)})")
    if not isinstance(meta, dict):
        return entry, Unusable(f"{where}.json must hold an object with 'text', got {type(meta).__name__}")
    captions, tags = _strings(meta.get("text")), _strings(meta.get("tag"))
    if not captions:
        return entry, Unusable(f"{where}.json has no caption in 'text'")
    item = next(((name, data) for name, data in members.items() if f".{name.rsplit('.', 1)[-1]}" in extensions),
                None)
    if item is None:
        return entry, Unusable(f"{where}: no member ending in {', '.join(extensions) or '(none: the plugin reads no files)'}")
    name, data = item
    extra = {"original_data": meta["original_data"]} if "original_data" in meta else {}
    entry = ManifestEntry(id=entry.id, path=f"{where}.{name}", captions={language: captions},
                          labels={language: tags} if tags else {}, source="webdataset",
                          meta={"webdataset": {"shard": shard.name, "key": key}, **extra})
    return entry, MemberBytes(bytes(data), f".{name.rsplit('.', 1)[-1]}", str(scratch))


def _strings(value: Any) -> list[str]:
    """LAION writes ``text``/``tag`` as a list of strings or as one string."""
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def _fingerprint(shards: Sequence[Path]) -> str:
    described = "\n".join(f"{p.name} {p.stat().st_size}" for p in shards)
    return hashlib.sha256(described.encode("utf-8")).hexdigest()[:16]


def _sample_count(shards: Sequence[Path]) -> int | None:
    """The total from LAION's ``sizes.json`` beside the tars, when it lists every one of them."""
    total = 0
    for folder, names in _by_folder(shards).items():
        try:
            sizes = json.loads((folder / SIZES_FILE).read_text(encoding="utf-8"))
            total += sum(int(sizes[name]) for name in names)
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return total


def _by_folder(shards: Sequence[Path]) -> dict[Path, list[str]]:
    folders: dict[Path, list[str]] = {}
    for path in shards:
        folders.setdefault(path.parent, []).append(path.name)
    return folders
