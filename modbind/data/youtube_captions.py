"""Large LLM-captioned YouTube corpora: Auto-ACD (``youtube_id,caption``) and AudioSetCaps (``id,caption``).

Both name clips by YouTube id in several forms (``Y<ytid>``, ``<ytid>_<start 6d>``, ``<ytid>_<start>_<dur>``);
:func:`parse_youtube_clip_id` decides by length, and the audio is looked up under every common naming.
An id in none of these forms is kept as-is (its audio is looked up by the id itself).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from modbind.data.audio_index import parse_youtube_clip_id, youtube_stems
from modbind.data.manifest import ManifestEntry
from modbind.data.metadata import Row, read_csv
from modbind.data.reader_base import MediaLocator, MetadataReader, split_files

_BOILERPLATE = re.compile(r'be:\s*"(.+)"', re.DOTALL)


def strip_boilerplate(caption: str) -> str:
    """``The audio caption for the given information could be: "X"`` → ``X`` (Auto-ACD artefact)."""
    match = _BOILERPLATE.search(caption)
    return (match.group(1) if match else caption).strip()


def youtube_entry(row: Row, clip_id: str, caption: str, split: str, source: str, locator: MediaLocator) -> ManifestEntry:
    """An entry for one YouTube clip named ``clip_id`` in any supported id form."""
    clip_id = clip_id.strip()
    if not clip_id:
        raise row.fail("empty clip id; every row needs one")
    if not caption.strip():
        raise row.fail(f"empty caption for {clip_id!r}; remove the row or add its caption")
    ytid, start = parse_youtube_clip_id(clip_id)
    meta: dict[str, object] = {}
    stems = [clip_id]
    if ytid is not None:
        meta["youtube_id"] = ytid
        if start is not None:
            meta["start"] = start
        stems += youtube_stems(ytid, start)
    path = locator.audio_path(stems, f"audio/{clip_id}.wav", where=row.where())
    return ManifestEntry(id=clip_id, path=path, captions={"en": [caption.strip()]}, split=split, source=source, meta=meta)


class AutoACDReader(MetadataReader):
    name = "auto_acd"
    splits = ("train", "test")
    description = "Auto-ACD train.csv / test.csv (youtube_id,caption); ids Y<ytid> or <ytid>_<start 6d>"

    def entries(self, root: Path, split: str | None, locator: MediaLocator) -> Iterator[ManifestEntry]:
        for name, csv_path in split_files(root, split, self.splits, ("{name}.csv", "auto-acd/{name}.csv"), "Auto-ACD"):
            for row in read_csv(csv_path, ("youtube_id", "caption")):
                yield youtube_entry(row, row["youtube_id"], strip_boilerplate(row["caption"]), name, "auto_acd", locator)


AUDIOSETCAPS_FILES = {
    "audioset": "AudioSetCaps_caption.csv",
    "vggsound": "VGGSound_AudioSetCaps_caption.csv",
    "youtube8m": "YouTube-8M_AudioSetCaps_caption.csv",
}


class AudioSetCapsReader(MetadataReader):
    name = "audiosetcaps"
    splits = tuple(AUDIOSETCAPS_FILES)
    split_aliases = {"youtube-8m": "youtube8m", "yt8m": "youtube8m"}
    description = "AudioSetCaps Dataset/*_caption.csv (id,caption); 'splits' are the three source files"

    def entries(self, root: Path, split: str | None, locator: MediaLocator) -> Iterator[ManifestEntry]:
        templates = ("{name}", "Dataset/{name}")
        for name, csv_path in split_files(root, split, self.splits, templates, "AudioSetCaps", AUDIOSETCAPS_FILES):
            for row in read_csv(csv_path, ("id", "caption")):
                yield youtube_entry(row, row["id"], row["caption"], "train", f"audiosetcaps/{name}", locator)
