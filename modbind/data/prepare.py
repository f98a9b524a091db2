"""``data prepare``: a reader's entries, checked against the files on disk, written as a manifest.

Every referenced audio file (and image, where a dataset pairs frames) is checked to exist and decode.
Entries whose audio is missing or undecodable are left out of the manifest but listed, with counts, in
the side report ``<manifest>.report.json``; nothing is dropped silently. Paths in the written manifest are
relative to the manifest's folder (the trainer's default root), so the media must lie inside that folder
unless absolute paths are explicitly allowed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from modbind.atomic import write_json_atomic
from modbind.data.manifest import ManifestEntry, write_manifest
from modbind.data.overlap import Blacklist
from modbind.data.paths import ALLOW_ABSOLUTE_FLAG, is_under, resolve_under
from modbind.errors import DataError, exception_reason


@dataclass
class FileCheck:
    """The outcome of checking one file: a problem (None = usable) and, for audio, what the header says."""

    problem: str | None = None
    detail: str = ""
    duration: float | None = None
    sample_rate: int | None = None


def check_audio(path: Path, *, decode: bool = False) -> FileCheck:
    """Cheap check: the header parses and promises samples. ``decode``: also decode the whole file."""
    import soundfile

    if not path.is_file():
        return FileCheck("missing")
    try:
        info = soundfile.info(str(path))
    except Exception as err:  # noqa: BLE001 - libsndfile raises several types for broken files
        return FileCheck("undecodable", exception_reason(err))
    if info.frames <= 0 or info.samplerate <= 0:
        return FileCheck("undecodable", "no samples")
    if decode:
        from modbind.audio.io import load_audio

        try:
            load_audio(path, int(info.samplerate))
        except DataError as err:
            return FileCheck("undecodable", str(err))
    return FileCheck(duration=info.frames / info.samplerate, sample_rate=int(info.samplerate))


def check_image(path: Path) -> FileCheck:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return FileCheck("missing")
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return FileCheck("undecodable", str(err) or type(err).__name__)
    return FileCheck()


@dataclass
class PrepareReport:
    """What ``data prepare`` wrote and what it left out, and why."""

    dataset: str
    split: str | None
    manifest: str
    read: int = 0
    written: int = 0
    problems: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def add(self, kind: str, entry: ManifestEntry, path: str, detail: str = "") -> None:
        record = {"id": entry.id, "path": path}
        if detail:
            record["detail"] = detail
        self.problems.setdefault(kind, []).append(record)

    def counts(self) -> dict[str, int]:
        return {kind: len(items) for kind, items in sorted(self.problems.items())}

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "manifest": self.manifest, "read": self.read,
                "written": self.written, "counts": self.counts(), "problems": self.problems}

    def summary(self) -> str:
        parts = [f"{self.written} of {self.read} entries written to {self.manifest}"]
        parts += [f"{n} {kind.replace('_', ' ')}" for kind, n in self.counts().items()]
        return "; ".join(parts)


def report_path(manifest: Path) -> Path:
    """``train.jsonl`` → ``train.report.json`` beside it."""
    manifest = Path(manifest)
    stem = manifest.name[: -len(manifest.suffix)] if manifest.suffix else manifest.name
    return manifest.with_name(f"{stem}.report.json")


def prepare(
    entries: Iterable[ManifestEntry],
    *,
    dataset: str,
    root: Path,
    out: Path,
    split: str | None = None,
    probe: bool = False,
    decode: bool = False,
    expect_images: bool = False,
    blacklist: Blacklist | None = None,
    workers: int = 4,
    progress: bool = True,
    allow_absolute_paths: bool = False,
) -> PrepareReport:
    """Check entries' files, write the usable ones to ``out`` and the report beside it; returns the report.

    ``root`` is the folder the entries' paths are relative to (the dataset's media root). No path may
    leave it (see :mod:`modbind.data.paths`): such an entry fails the run before its file is opened. The
    manifest's paths are relative to its own folder, so the media must lie inside that folder, unless
    ``allow_absolute_paths``: then media outside it are written as absolute paths (and absolute entry
    paths are accepted). Streams in chunks, so multi-million-row corpora never sit in memory.
    ``expect_images``: report clips without a paired frame (VGGSound).
    """
    root, out = Path(root), Path(out)
    if not allow_absolute_paths and not is_under(root, out.parent):
        raise DataError(
            f"{dataset}'s files under {root} lie outside {out.parent}, the folder of the manifest, and a manifest's "
            f"paths may not leave its folder; write it inside the dataset (e.g. --out {root / out.name}), or "
            f"pass {ALLOW_ABSOLUTE_FLAG} to write absolute paths (then allow them where the manifest is read too)")
    report = PrepareReport(dataset=dataset, split=split, manifest=str(out))
    located = _located(_without_blacklisted(entries, blacklist, report), root, dataset, allow_absolute_paths)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(
        desc=f"checking {dataset} files", unit="clip", disable=not progress
    ) as bar:
        checked = _checked_chunks(located, decode, pool, bar)
        usable = (
            updated
            for item, audio, image in checked
            if (updated := _usable(item, audio, image, out.parent, probe, expect_images, report)) is not None
        )
        report.written = write_manifest(usable, out)
    write_json_atomic(report_path(out), report.to_json())
    return report


CHUNK = 1024


@dataclass(frozen=True)
class Located:
    """An entry with its audio (and image) file, checked to lie under the data root."""

    entry: ManifestEntry
    audio: Path
    image: Path | None


def _located(entries: Iterable[ManifestEntry], root: Path, dataset: str, allow_absolute: bool) -> Iterator[Located]:
    for entry in entries:
        where = f"{dataset} entry '{entry.id}'"
        audio = resolve_under(root, entry.path, where=where, allow_absolute=allow_absolute)
        image = resolve_under(root, entry.image, where=where, allow_absolute=allow_absolute) if entry.image else None
        yield Located(entry, audio, image)


def _checked_chunks(items: Iterable[Located], decode: bool, pool: ThreadPoolExecutor,
                    bar: tqdm) -> Iterator[tuple[Located, FileCheck, FileCheck | None]]:
    chunk: list[Located] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == CHUNK:
            yield from _check_chunk(chunk, decode, pool, bar)
            chunk = []
    yield from _check_chunk(chunk, decode, pool, bar)


def _check_chunk(chunk: list[Located], decode: bool, pool: ThreadPoolExecutor,
                 bar: tqdm) -> Iterator[tuple[Located, FileCheck, FileCheck | None]]:
    for item, (audio, image) in zip(chunk, pool.map(lambda i: _check_files(i, decode), chunk)):
        bar.update(1)
        yield item, audio, image


def _usable(item: Located, audio: FileCheck, image: FileCheck | None, folder: Path, probe: bool,
            expect_images: bool, report: PrepareReport) -> ManifestEntry | None:
    """The entry rewritten for the manifest's folder, or None (recorded in the report) when unusable."""
    entry = item.entry
    if audio.problem is not None:
        report.add(f"{audio.problem}_audio", entry, entry.path, audio.detail)
        return None
    updates: dict[str, Any] = {"path": _relative_to(item.audio, folder)}
    if image is not None and image.problem is not None:
        report.add(f"{image.problem}_image", entry, str(entry.image), image.detail)
        updates["image"] = None
    elif item.image is not None:
        updates["image"] = _relative_to(item.image, folder)
    elif expect_images:
        report.add("no_frame_found", entry, entry.path)
    if probe:
        updates.update(duration=round(audio.duration or 0.0, 6), sample_rate=audio.sample_rate)
    return entry.model_copy(update=updates)


def _without_blacklisted(entries: Iterable[ManifestEntry], blacklist: Blacklist | None,
                         report: PrepareReport) -> Iterator[ManifestEntry]:
    """Entries not on the blacklist, first occurrence of each id only (repeats are reported)."""
    seen: set[str] = set()
    for entry in entries:
        report.read += 1
        reason = blacklist.reason(entry) if blacklist else None
        if reason is not None:
            report.add("blacklisted", entry, entry.path, reason)
            continue
        if entry.id in seen:
            report.add("duplicate_id", entry, entry.path, "an earlier entry has the same id")
            continue
        seen.add(entry.id)
        yield entry


def _check_files(item: Located, decode: bool) -> tuple[FileCheck, FileCheck | None]:
    audio = check_audio(item.audio, decode=decode)
    image = check_image(item.image) if item.image is not None and audio.problem is None else None
    return audio, image


def _relative_to(path: Path, folder: Path) -> str:
    """``path`` relative to the manifest's folder, or absolute where it lies outside (only when allowed)."""
    if is_under(path, folder):
        return os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    return os.path.abspath(path)
