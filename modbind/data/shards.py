"""Webdataset-style tar shards holding items already decoded by their plugin (bytes + JSON header).

Decoding (e.g. FLAC/MP3 plus resampling for audio) costs milliseconds per item; reading back what the
plugin packed costs microseconds. Packing once moves that work out of every epoch, and a few hundred tar
files replace millions of small files. What the bytes mean is the plugin's business
(:meth:`~modbind.contracts.EncoderPlugin.pack_item` / ``unpack_item``); this module only stores them.

Layout: ``<out>/shard-000000.tar`` ... plus ``<out>/shards.json`` (format, plugin, per-shard counts,
skipped items). Each sample is two members sharing a key: ``<key>.json`` (the manifest entry, the packed
format and the plugin's header) followed by ``<key>.<packed format>`` (the bytes).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import itertools
import json
import logging
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from modbind.atomic import publish, temp_path_for, write_json_atomic
from modbind.contracts import EncoderOptions, EncoderPlugin, PackedItem
from modbind.data.manifest import ManifestEntry
from modbind.data.paths import resolve_under
from modbind.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMAT = "modbind-shards-v2"
INDEX_NAME = "shards.json"
PROGRESS_NAME = "shards.progress.json"
"""Written after each complete shard while packing; removed when the pack finishes."""
_WINDOW = 256
"""Items decoded ahead of the writer; bounds memory when packing with several processes."""


@dataclass(frozen=True)
class ShardRef:
    """Where one packed item's bytes sit inside an uncompressed tar shard (read by seeking)."""

    shard: str
    offset: int
    size: int
    format: str
    meta: dict[str, Any]


@dataclass
class PackReport:
    out_dir: str
    plugin: str
    packed_format: str
    noun: str = "items"
    shards: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    resumed_after_shards: int = 0
    """Complete shards an interrupted earlier run had left (kept; packing went on after them)."""

    @property
    def packed(self) -> int:
        return sum(s["count"] for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "plugin": self.plugin, "packed_format": self.packed_format, "packed": self.packed,
                "shards": self.shards, "skipped": self.skipped}

    def summary(self) -> str:
        resumed = (f" (resumed after {self.resumed_after_shards} shards of an interrupted run)"
                   if self.resumed_after_shards else "")
        return (f"{self.packed} {self.noun} in {len(self.shards)} shards ({self.packed_format}, plugin {self.plugin}) "
                f"in {self.out_dir}{resumed}; {len(self.skipped)} skipped (see {INDEX_NAME})")


@dataclass(frozen=True)
class MemberBytes:
    """An item's file held in memory (a member of someone else's tar): decoded through a scratch file in
    ``scratch``, the output folder, under a name modbind makes up, so a member's own name never becomes
    a path."""

    data: bytes
    suffix: str
    """The member's file ending (e.g. ``.flac``), already checked against the plugin's ``file_extensions``."""
    scratch: str


@dataclass(frozen=True)
class Unusable:
    """A sample that cannot become an item (e.g. no audio member): skipped and counted with ``reason``."""

    reason: str


ItemSource = str | MemberBytes | Unusable
"""Where a sample's item comes from: a file path, bytes of a tar member, or nowhere (with the reason)."""
_PackJob = tuple[int, ItemSource, EncoderPlugin[Any], EncoderOptions, float | None]


def _pack_job(job: _PackJob) -> tuple[int, PackedItem | None, str]:
    """Worker: decode one item and pack it with its plugin; (index, packed item or None, error)."""
    index, source, plugin, options, max_seconds = job
    if isinstance(source, Unusable):
        return index, None, source.reason
    try:
        if isinstance(source, MemberBytes):
            with _scratch_file(source, index) as path:
                item = plugin.load_item(path, options)
        else:
            item = plugin.load_item(Path(source), options)
        return index, plugin.pack_item(item, options, max_seconds=max_seconds), ""
    except DataError as err:
        return index, None, str(err)


@contextlib.contextmanager
def _scratch_file(source: MemberBytes, index: int) -> Iterator[Path]:
    """The member's bytes in a scratch file of the output folder, removed afterwards."""
    path = Path(source.scratch) / f".member-{os.getpid()}-{index}{source.suffix}"
    try:
        path.write_bytes(source.data)
        yield path
    finally:
        path.unlink(missing_ok=True)


def pack_shards(
    entries: Iterable[ManifestEntry],
    root: Path,
    out_dir: Path,
    plugin: EncoderPlugin[Any],
    options: EncoderOptions,
    *,
    clips_per_shard: int = 1000,
    max_seconds: float | None = None,
    workers: int = 1,
    progress: bool = True,
    allow_absolute_paths: bool = False,
) -> PackReport:
    """Decode every entry's item with ``plugin`` (at its ``options``) into tar shards; unreadable files are skipped.

    Every entry's path must stay under ``root`` (absolute ones only with ``allow_absolute_paths``): one
    that does not fails the pack before anything is read or written.
    ``max_seconds`` keeps only the start of long time series (saves disk when training crops 10 s anyway).
    Each shard is written to a temporary name and renamed when complete, so a crash never leaves a
    truncated shard behind under a final name; a progress file written after each shard lets the same
    call on the same folder resume after the last complete shard.
    """
    root = Path(root)
    entries = list(entries)
    paths = [str(resolve_under(root, e.item_path(plugin.modality), where=e.where(), allow_absolute=allow_absolute_paths))
             for e in entries]
    ids = hashlib.sha256("\n".join(e.id for e in entries).encode("utf-8")).hexdigest()[:16]
    samples = zip(entries, paths)
    identity = {"entries": len(entries), "entry_ids_sha256": ids}
    return pack_samples(samples, out_dir, plugin, options, input_identity=identity, total=len(entries),
                        clips_per_shard=clips_per_shard, max_seconds=max_seconds, workers=workers, progress=progress)


def pack_samples(
    samples: Iterable[tuple[ManifestEntry, ItemSource]],
    out_dir: Path,
    plugin: EncoderPlugin[Any],
    options: EncoderOptions,
    *,
    input_identity: dict[str, Any],
    total: int | None = None,
    clips_per_shard: int = 1000,
    max_seconds: float | None = None,
    workers: int = 1,
    progress: bool = True,
) -> PackReport:
    """:func:`pack_shards` for any stream of (entry, item source), read once and in order.

    ``input_identity`` names the input (e.g. a hash of its ids): a resumed pack must see the same input,
    and skips the samples the interrupted run had already consumed.
    """
    out_dir = Path(out_dir)
    if clips_per_shard < 1:
        raise DataError(f"clips_per_shard must be at least 1 (got {clips_per_shard})")
    if plugin.packed_format is None:
        raise ConfigError(f"plugin '{plugin.name}' cannot pack {plugin.modality} items into shards; "
                          "train from its manifest instead")
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = _pack_settings(input_identity, plugin, options, clips_per_shard, max_seconds)
    report = PackReport(out_dir=str(out_dir), plugin=plugin.name, packed_format=str(plugin.packed_format),
                        noun=plugin.item_noun)
    writer = _ShardWriter(out_dir, clips_per_shard, report)
    start = _resume_point(out_dir, settings, report, writer)
    remaining = enumerate(itertools.islice(samples, start, None), start=start)
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        with tqdm(total=total, initial=start, desc=f"packing {plugin.item_noun}", unit="item",
                  disable=not progress) as bar:
            while window := list(itertools.islice(remaining, _WINDOW)):  # bounded memory: a window at a time
                jobs = [(index, source, plugin, options, max_seconds) for index, (_, source) in window]
                entries = {index: entry for index, (entry, _) in window}
                results = pool.map(_pack_job, jobs, chunksize=8) if pool else map(_pack_job, jobs)
                for index, packed, error in results:
                    entry = entries[index]
                    bar.update(1)
                    if packed is None:
                        report.skipped.append({"id": entry.id, "path": entry.item_path(plugin.modality),
                                               "error": error})
                        continue
                    if writer.add(entry, packed):  # a shard is complete: samples < index + 1
                        _write_progress(out_dir, settings, index + 1, writer.key, report)
        writer.close()
    finally:
        writer.discard_open_shard()
        if pool is not None:
            pool.shutdown()
    write_json_atomic(out_dir / INDEX_NAME, report.to_json())
    (out_dir / PROGRESS_NAME).unlink(missing_ok=True)
    return report


def _pack_settings(input_identity: dict[str, Any], plugin: EncoderPlugin[Any], options: EncoderOptions,
                   clips_per_shard: int, max_seconds: float | None) -> dict[str, Any]:
    """What must be unchanged for a resumed pack to continue the same shards."""
    settings = {"format": FORMAT, "plugin": plugin.name, "packed_format": plugin.packed_format,
                "clips_per_shard": clips_per_shard, "max_seconds": max_seconds, **input_identity}
    settings.update({f"plugin.options.{key}": value for key, value in options.model_dump(mode="json").items()})
    return settings


def _write_progress(out_dir: Path, settings: dict[str, Any], next_entry: int, next_key: int,
                    report: PackReport) -> None:
    write_json_atomic(out_dir / PROGRESS_NAME, {"settings": settings, "next_entry": next_entry, "next_key": next_key,
                                                "shards": report.shards, "skipped": report.skipped})


def _resume_point(out_dir: Path, settings: dict[str, Any], report: PackReport, writer: _ShardWriter) -> int:
    """Index of the first entry still to pack: 0, or just after the last complete shard of an interrupted run."""
    path = out_dir / PROGRESS_NAME
    if not path.is_file():
        return 0
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        saved, next_entry, next_key = state["settings"], int(state["next_entry"]), int(state["next_key"])
        shards, skipped = list(state["shards"]), list(state["skipped"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path} is unreadable ({err}); delete it to pack {out_dir} from the start") from err
    changed = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in settings.items() if saved.get(k) != v]
    if changed:
        raise DataError(f"{out_dir} holds an interrupted pack with other settings ({'; '.join(changed)}); "
                        "rerun it with the same manifest and options, or use another --out folder")
    missing = [s["name"] for s in shards if not (out_dir / s["name"]).is_file()]
    if missing:
        raise DataError(f"{out_dir} lost shards of an interrupted pack ({', '.join(missing)}); "
                        f"delete {PROGRESS_NAME} there to pack from the start")
    report.shards, report.skipped = shards, skipped
    writer.key = next_key
    report.resumed_after_shards = len(shards)
    return next_entry


class _ShardWriter:
    """Appends samples to the current tar and rolls over to the next every ``clips_per_shard`` samples."""

    def __init__(self, out_dir: Path, clips_per_shard: int, report: PackReport):
        self.out_dir, self.clips_per_shard, self.report = out_dir, clips_per_shard, report
        self.tar: tarfile.TarFile | None = None
        self.count = 0
        self.key = 0

    def add(self, entry: ManifestEntry, packed: PackedItem) -> bool:
        """Append one sample; True when it completed (and closed) a shard."""
        if self.tar is None:
            name = f"shard-{len(self.report.shards):06d}.tar"
            self.tmp = temp_path_for(self.out_dir / name)
            self.name = name
            self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)
        key = f"{self.key:010d}"
        header = {"entry": entry.model_dump(mode="json", exclude_defaults=True), "format": self.report.packed_format,
                  "meta": packed.meta}
        self._member(f"{key}.json", json.dumps(header, ensure_ascii=False).encode("utf-8"))
        self._member(f"{key}.{self.report.packed_format}", packed.data)
        self.key += 1
        self.count += 1
        if self.count < self.clips_per_shard:
            return False
        self.close()
        return True

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        assert self.tar is not None
        self.tar.addfile(info, io.BytesIO(data))

    def discard_open_shard(self) -> None:
        """After an interruption: drop the half-written shard (completed shards stay valid)."""
        if self.tar is not None:
            self.tar.close()
            self.tmp.unlink(missing_ok=True)
            self.tar = None

    def close(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        publish(self.tmp, self.out_dir / self.name)
        self.report.shards.append({"name": self.name, "count": self.count})
        self.tar, self.count = None, 0


_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def list_shards(pattern: str | Path) -> list[Path]:
    """Shard files named by a folder, a ``.tar`` file, a glob or a brace range (``shard-{000..009}.tar``)."""
    text = str(pattern)
    path = Path(text)
    if path.is_dir():
        found = sorted(path.glob("*.tar"))
    elif (match := _BRACES.search(text)) is not None:
        first, last = match.group(1), match.group(2)
        width = len(first)
        found = [Path(text[: match.start()] + f"{k:0{width}d}" + text[match.end():])
                 for k in range(int(first), int(last) + 1)]
        missing = [p for p in found if not p.is_file()]
        if missing:
            raise DataError(f"shard {missing[0]} of {pattern} not found ({len(missing)} missing)")
    elif any(c in text for c in "*?["):
        found = [Path(p) for p in sorted(glob.glob(text))]
    else:
        found = [path] if path.is_file() else []
    if not found:
        raise DataError(f"no shards found at {pattern}; expected a folder of .tar files, a .tar file or a glob")
    return found


@dataclass
class ShardReadStats:
    """What :func:`iter_shards` skipped (corrupt samples or shards) instead of crashing mid-epoch."""

    samples: int = 0
    skipped_samples: int = 0
    broken_shards: list[str] = field(default_factory=list)


def iter_shards(
    pattern: str | Path, *, part: int = 0, parts: int = 1, stats: ShardReadStats | None = None
) -> Iterator[tuple[ManifestEntry, PackedItem]]:
    """(entry, packed item) for every sample of the shards in ``pattern``, read sequentially.

    ``part``/``parts`` give this reader every ``parts``-th shard starting at ``part`` (e.g. part =
    rank × workers + worker id), so DataLoader workers and ranks never read the same shard. The plugin
    that packed them turns each packed item back into an item (``unpack_item``).
    """
    if not 0 <= part < parts:
        raise DataError(f"part {part} is not in 0..{parts - 1}")
    stats = stats if stats is not None else ShardReadStats()
    for shard in list_shards(pattern)[part::parts]:
        try:
            yield from _iter_one(shard, stats)
        except (tarfile.TarError, OSError, EOFError) as err:
            stats.broken_shards.append(f"{shard}: {err}")
            log.warning("skipping the rest of shard %s: %s", shard, err)


def _iter_one(shard: Path, stats: ShardReadStats) -> Iterator[tuple[ManifestEntry, PackedItem]]:
    pending_key, header = None, None
    for name, data in read_tar_members(shard):
        key, _, kind = name.rpartition(".")
        if kind == "json":
            if pending_key is not None:
                stats.skipped_samples += 1  # a header without its payload
            pending_key, header = key, data
            continue
        sample = _sample(shard, key, kind, header, data) if key == pending_key and header is not None else None
        pending_key, header = None, None
        if sample is None:
            stats.skipped_samples += 1
            continue
        stats.samples += 1
        yield sample


def index_shards(pattern: str | Path) -> Iterator[tuple[ManifestEntry, ShardRef]]:
    """(entry, where its bytes are) for every sample, reading headers only: random access seeks later."""
    for shard in list_shards(pattern):
        try:
            with tarfile.open(shard) as tar:
                header: dict[str, Any] | None = None
                for member in tar:
                    key, _, kind = member.name.rpartition(".")
                    if kind == "json":
                        handle = tar.extractfile(member)
                        header = {"key": key, **json.loads(handle.read())} if handle else None
                        if header is not None and not {"entry", "format"} <= set(header):
                            raise DataError(f"{shard}: {member.name} is not a modbind shard header (a LAION-CLAP-"
                                            "style webdataset tar?); convert the tars with `modbind data pack TARS "
                                            "--webdataset --out DIR --recipe FILE` and train from DIR")
                    elif header is not None and header["key"] == key and kind == header.get("format"):
                        entry = ManifestEntry.model_validate(header["entry"])
                        yield entry, ShardRef(str(shard), member.offset_data, member.size, kind, dict(header["meta"]))
                        header = None
        except (tarfile.TarError, OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"{shard}: not a readable modbind shard ({err}); re-pack it with `modbind data pack`") from None


def read_packed(ref: ShardRef) -> PackedItem:
    """The bytes and header of one packed item (one seek and one read)."""
    with open(ref.shard, "rb") as handle:
        handle.seek(ref.offset)
        data = handle.read(ref.size)
    if len(data) != ref.size:
        raise DataError(f"{ref.shard}: truncated at byte {ref.offset}")
    return PackedItem(data, ref.meta)


_BLOCK = 512


def read_tar_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular files in a tar, in order.

    A minimal sequential reader: :mod:`tarfile` spends more time per member than turning 10 s of PCM into
    floats, which is the whole point of packing. Pax/GNU extension headers are honoured for long names;
    anything malformed raises :class:`tarfile.ReadError`.
    """
    with open(path, "rb", buffering=0) as handle:
        long_name: str | None = None
        while True:
            block = handle.read(_BLOCK)
            if len(block) < _BLOCK:
                if block:
                    raise tarfile.ReadError(f"truncated header at byte {handle.tell() - len(block)}")
                return
            if block == b"\0" * _BLOCK:
                return
            size, kind, name = _parse_header(block)
            padded = -(-size // _BLOCK) * _BLOCK
            data = handle.read(padded)
            if len(data) < padded:
                raise tarfile.ReadError(f"member {name!r} truncated: {len(data)} of {padded} bytes")
            data = data[:size]
            if kind in (b"L",):
                long_name = data.rstrip(b"\0").decode("utf-8")
            elif kind in (b"x",):
                long_name = _pax_path(data) or long_name
            elif kind in (b"0", b"\0", b"7"):
                yield (long_name or name), data
                long_name = None
            else:
                long_name = None  # directories, links, global headers: not samples


def _parse_header(block: bytes) -> tuple[int, bytes, str]:
    stored = block[148:156].rstrip(b" \0")
    try:
        checksum = int(stored, 8) if stored else -1
    except ValueError:
        raise tarfile.ReadError("bad header checksum field") from None
    if checksum != sum(block[:148]) + 256 + sum(block[156:]):
        raise tarfile.ReadError("header checksum mismatch")
    raw_size = block[124:136]
    if raw_size[0] & 0x80:  # GNU base-256 size
        size = int.from_bytes(raw_size[1:], "big")
    else:
        size = int(raw_size.rstrip(b" \0") or b"0", 8)
    name = block[0:100].split(b"\0", 1)[0].decode("utf-8")
    prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8") if block[257:262] == b"ustar" else ""
    return size, block[156:157], f"{prefix}/{name}" if prefix else name


def _pax_path(data: bytes) -> str | None:
    for record in data.split(b"\n"):
        _, _, field = record.partition(b" ")
        key, _, value = field.partition(b"=")
        if key == b"path":
            return value.decode("utf-8")
    return None


def _sample(shard: Path, key: str, kind: str, header: bytes, data: bytes) -> tuple[ManifestEntry, PackedItem] | None:
    try:
        meta = json.loads(header)
        entry = ManifestEntry.model_validate(meta["entry"])
        packed_format, item_meta = str(meta["format"]), dict(meta["meta"])
    except (ValueError, KeyError, TypeError) as err:
        log.warning("%s: sample %s has an unreadable header (%s); skipped", shard, key, err)
        return None
    if kind != packed_format:
        log.warning("%s: sample %s holds a '%s' member, its header says '%s'; skipped", shard, key, kind, packed_format)
        return None
    return entry, PackedItem(data, item_meta)


def is_shard_source(path: str | Path) -> bool:
    """Whether a data source names shards (a ``.tar``, a brace/glob pattern or a folder of ``.tar`` files)."""
    text = str(path)
    if text.endswith(".tar") or _BRACES.search(text):
        return True
    folder = Path(text)
    return folder.is_dir() and any(folder.glob("*.tar"))
