"""Overlap hygiene: WavCaps-style blacklists and a train-vs-evaluation overlap check.

A clip can reach both a training and an evaluation manifest under different ids (WavCaps' AudioSet_SL
``Y<ytid>.wav`` vs AudioCaps' ``<ytid>,<start>``; a Freesound recording in Clotho and in WavCaps), so
clips are compared by id, by the resolved path of each of their files (``path`` and every modality's
``items`` file) and by the source ids readers keep in ``meta`` (``youtube_id``, ``freesound_id``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from modbind.data.audio_index import parse_youtube_clip_id
from modbind.data.manifest import ManifestEntry
from modbind.data.metadata import read_json
from modbind.errors import DataError

SOURCE_KEYS = ("youtube_id", "freesound_id")


@dataclass
class Blacklist:
    """Clips to exclude: YouTube ids (WavCaps key ``AudioSet``) and Freesound ids (key ``FreeSound``)."""

    youtube_ids: set[str] = field(default_factory=set)
    freesound_ids: set[str] = field(default_factory=set)
    sources: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> "Blacklist":
        """Read a WavCaps blacklist JSON (``{"AudioSet": ["Y<ytid>.wav", ...], "FreeSound": ["<id>", ...]}``)."""
        document = read_json(path)
        if not isinstance(document, dict) or not ({"AudioSet", "FreeSound"} & set(document)):
            raise DataError(f"{path}: expected a JSON object with 'AudioSet' and/or 'FreeSound' lists (WavCaps blacklist)")
        blacklist = cls(sources=[str(path)])
        for key in ("AudioSet", "FreeSound"):
            values = document.get(key, [])
            if not isinstance(values, list):
                raise DataError(f"{path}: '{key}' must be a list of ids")
            for value in values:
                if key == "AudioSet":
                    ytid, _ = parse_youtube_clip_id(str(value))
                    blacklist.youtube_ids.add(ytid if ytid is not None else str(value))
                else:
                    blacklist.freesound_ids.add(str(value).strip())
        return blacklist

    def merge(self, other: "Blacklist") -> "Blacklist":
        return Blacklist(self.youtube_ids | other.youtube_ids, self.freesound_ids | other.freesound_ids,
                         self.sources + other.sources)

    def reason(self, entry: ManifestEntry) -> str | None:
        """Why ``entry`` is blacklisted (``youtube_id X`` / ``freesound_id Y``), or None."""
        ytid = entry.meta.get("youtube_id")
        if ytid is not None and str(ytid) in self.youtube_ids:
            return f"youtube_id {ytid}"
        fsid = entry.meta.get("freesound_id")
        if fsid is not None and str(fsid) in self.freesound_ids:
            return f"freesound_id {fsid}"
        return None

    def __len__(self) -> int:
        return len(self.youtube_ids) + len(self.freesound_ids)


def load_blacklists(paths: Iterable[Path]) -> Blacklist:
    merged = Blacklist()
    for path in paths:
        merged = merged.merge(Blacklist.load(Path(path)))
    return merged


@dataclass
class OverlapReport:
    """Pairs (train id, eval id) that share a clip, by how they were matched."""

    by_kind: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def train_ids(self) -> set[str]:
        return {train_id for pairs in self.by_kind.values() for train_id, _ in pairs}

    def counts(self) -> dict[str, int]:
        return {kind: len(pairs) for kind, pairs in sorted(self.by_kind.items())}

    def to_json(self) -> dict[str, object]:
        return {"counts": self.counts(), "overlapping_train_clips": len(self.train_ids),
                "pairs": {k: [list(p) for p in v] for k, v in self.by_kind.items()}}


def clip_keys(entry: ManifestEntry, root: Path) -> Iterator[tuple[str, str]]:
    """(kind, key) pairs that identify the clip behind ``entry``."""
    yield "id", entry.id
    for file in dict.fromkeys((entry.path, *entry.items.values())):  # a shared file of any modality counts
        yield "path", os.path.realpath(Path(root) / file)
    for key in SOURCE_KEYS:
        value = entry.meta.get(key)
        if value not in (None, ""):
            yield key, str(value)


def find_overlap(train: Iterable[ManifestEntry], train_root: Path, evaluation: Iterable[ManifestEntry],
                 eval_root: Path) -> OverlapReport:
    """Every train clip that is also an evaluation clip by id, file path, YouTube id or Freesound id."""
    index: dict[tuple[str, str], list[str]] = {}
    for entry in evaluation:
        for key in clip_keys(entry, eval_root):
            index.setdefault(key, []).append(entry.id)
    report = OverlapReport()
    for entry in train:
        for kind, value in clip_keys(entry, train_root):
            for eval_id in index.get((kind, value), ()):
                report.by_kind.setdefault(kind, []).append((entry.id, eval_id))
    return report
