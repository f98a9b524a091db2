"""Finding media files by name in a dataset folder whose layout varies between downloads.

YouTube-based datasets (AudioCaps, Auto-ACD, AudioSetCaps, VGGSound) ship no audio, and every download
script names files its own way (``Y<ytid>.wav``, ``<ytid>_<start>.flac``, ``<ytid>_<start:06d>.wav`` ...).
Rather than guessing one convention, readers list the plausible stems of a clip and look them up in an
index of the files actually on disk, built once per folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from modbind.audio.io import AUDIO_EXTENSIONS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def _folded(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


class MediaIndex:
    """Every file under ``root`` with one of ``extensions``, keyed by file stem (built lazily, once)."""

    def __init__(self, root: Path, extensions: Sequence[str] = AUDIO_EXTENSIONS):
        self.root = Path(root)
        self.extensions = tuple(e.lower() for e in extensions)
        self._by_stem: dict[str, list[str]] | None = None
        self._by_parent: dict[str, list[str]] | None = None

    def _build(self) -> None:
        by_stem: dict[str, list[str]] = {}
        by_parent: dict[str, list[str]] = {}
        for folder, dirs, files in os.walk(self.root, followlinks=True):
            dirs.sort()
            rel_folder = os.path.relpath(folder, self.root)
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                if ext.lower() not in self.extensions:
                    continue
                rel = name if rel_folder == "." else os.path.join(rel_folder, name)
                by_stem.setdefault(stem, []).append(rel)
                if rel_folder != ".":
                    by_parent.setdefault(os.path.basename(rel_folder), []).append(rel)
        self._by_stem, self._by_parent = by_stem, by_parent

    def _stems(self) -> dict[str, list[str]]:
        if self._by_stem is None:
            self._build()
        assert self._by_stem is not None
        return self._by_stem

    def __len__(self) -> int:
        return sum(len(v) for v in self._stems().values())

    def find(self, stems: Iterable[str], *, within: Sequence[str] = (), prefer: Sequence[str] = ()) -> str | None:
        """The relative path of the first stem found, or None.

        ``within``: folder-name keys (case, ``_``, ``-`` and spaces ignored) one of which must occur in the
        file's folders, e.g. a WavCaps source, so that equal ids of two sources never mix.
        ``prefer``: folder-name keys that win when a stem occurs more than once (e.g. the split name).
        """
        index = self._stems()
        within_keys = [_folded(w) for w in within]
        prefer_keys = [_folded(p) for p in prefer]
        for stem in stems:
            candidates = index.get(stem)
            if not candidates:
                continue
            if within_keys:
                candidates = [c for c in candidates if _folders_match(c, within_keys)]
            if not candidates:
                continue
            if prefer_keys and len(candidates) > 1:
                preferred = [c for c in candidates if _folders_match(c, prefer_keys)]
                candidates = preferred or candidates
            return candidates[0]
        return None

    def find_in_folder(self, folder_name: str) -> str | None:
        """The middle file (sorted) of a folder called ``folder_name``: a clip's frame folder."""
        if self._by_parent is None:
            self._build()
        assert self._by_parent is not None
        files = sorted(self._by_parent.get(folder_name, []))
        return files[len(files) // 2] if files else None


def _folders_match(relative: str, keys: Sequence[str]) -> bool:
    folders = [_folded(part) for part in Path(relative).parts[:-1]]
    return any(key in folder for key in keys for folder in folders)


def parse_youtube_clip_id(clip_id: str) -> tuple[str | None, int | None]:
    """(YouTube id, start seconds) of the id forms YouTube-based datasets use; (None, None) if unknown.

    Forms: ``Y<ytid>`` (AudioSet), ``<ytid>_<start 6d>`` (VGGSound), ``<ytid>_<start>_<duration>``
    (YouTube-8M in AudioSetCaps), ``Y<ytid>_<start>_<end>``, each optionally with a file extension.
    Length decides, not the leading ``Y``: a YouTube id may itself start with ``Y``.
    """
    stem = clip_id.rsplit(".", 1)[0] if clip_id.lower().endswith((".wav", ".flac", ".mp3", ".mp4")) else clip_id
    if len(stem) == 12 and stem[0] == "Y":
        return stem[1:], None
    if len(stem) == 11:
        return stem, None
    for offset in (0, 1):
        if offset and stem[:1] != "Y":
            continue
        ytid = stem[offset : offset + 11]
        rest = stem[offset + 11 :]
        if len(ytid) == 11 and rest.startswith("_"):
            start = rest[1:].split("_", 1)[0]
            if start.isdigit():
                return ytid, int(start)
            try:
                return ytid, int(float(start))
            except ValueError:
                continue
    return None, None


def youtube_stems(ytid: str, start: int | None) -> list[str]:
    """File stems download scripts use for one YouTube clip, most common first."""
    stems = [f"Y{ytid}"]
    if start is not None:
        end = start + 10
        stems += [f"{ytid}_{start}", f"{ytid}_{start:06d}", f"Y{ytid}_{start}", f"{ytid}_{start}_{end}",
                  f"Y{ytid}_{start}_{end}", f"{ytid}_{start}_10", f"Y{ytid}_{start:.3f}_{end:.3f}",
                  f"{ytid}_{start:.3f}_{end:.3f}"]
    stems.append(ytid)
    return stems
