"""VGGSound: ``vggsound.csv`` without a header (``ytid,start_seconds,label,split``), 309 classes.

Clips are ``<ytid>_<start:06d>`` (official naming); audio is looked up under that stem and the other
YouTube namings, and a video frame (``<stem>.jpg`` or a folder ``<stem>/`` of frames) becomes ``image``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from modbind.data.audio_index import youtube_stems
from modbind.data.manifest import ManifestEntry
from modbind.data.metadata import read_csv
from modbind.data.reader_base import MediaLocator, MetadataReader, split_files

COLUMNS = ("youtube_id", "start_seconds", "label", "split")


class VGGSoundReader(MetadataReader):
    name = "vggsound"
    splits = ("train", "test")
    pairs_images = True
    description = "VGGSound vggsound.csv (no header: ytid,start,label,split); audio <ytid>_<start:06d>.wav, frames <stem>.jpg"

    def entries(self, root: Path, split: str | None, locator: MediaLocator) -> Iterator[ManifestEntry]:
        templates = ("vggsound.csv", "data/vggsound.csv", "metadata/vggsound.csv")
        [(_, csv_path)] = split_files(root, None, ("all",), templates, "VGGSound")
        for row in read_csv(csv_path, COLUMNS, names=COLUMNS):
            ytid = row["youtube_id"].strip()
            if len(ytid) != 11:
                raise row.fail(
                    f"YouTube id {ytid!r} is not 11 characters (vggsound.csv has no header line: remove one if present)"
                )
            start = row.integer("start_seconds", allowed=range(0, 10**6), what="start seconds")
            row_split = row["split"].strip()
            if row_split not in self.splits:
                raise row.fail(f"split {row_split!r} is not 'train' or 'test'; fix the 4th column")
            if split is not None and row_split != split:
                continue
            stem = f"{ytid}_{start:06d}"
            yield ManifestEntry(
                id=stem,
                path=locator.audio_path([stem, *youtube_stems(ytid, start)], f"{row_split}/{stem}.wav",
                                        prefer=[row_split], where=row.where()),
                labels={"en": [row["label"].strip()]},
                split=row_split,
                image=locator.image_path(stem),
                source="vggsound",
                meta={"youtube_id": ytid, "start": start},
            )
