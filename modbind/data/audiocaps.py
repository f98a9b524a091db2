"""AudioCaps (v1 ``dataset/`` and v2 ``dataset2.0/``): one CSV row per caption, grouped into clips.

The 5 captions of a val/test clip are *not* on adjacent rows, so rows are grouped by
``(youtube_id, start_time)`` in first-appearance order; within a clip, file order is caption order
(caption_1..caption_5 in every converted copy).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from modbind.data.audio_index import youtube_stems
from modbind.data.manifest import ManifestEntry
from modbind.data.metadata import read_csv
from modbind.data.reader_base import MediaLocator, MetadataReader, split_files

COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")


class AudioCapsReader(MetadataReader):
    name = "audiocaps"
    splits = ("train", "val", "test")
    split_aliases = {"validation": "val", "evaluation": "test"}
    description = "AudioCaps {train,val,test}.csv (cdjkim/audiocaps, v1 or v2); audio named Y<ytid>.* or <ytid>_<start>.*"

    def entries(self, root: Path, split: str | None, locator: MediaLocator) -> Iterator[ManifestEntry]:
        templates = ("{name}.csv", "dataset/{name}.csv", "dataset2.0/{name}.csv")
        for name, csv_path in split_files(root, split, self.splits, templates, "AudioCaps"):
            yield from self._clips(csv_path, name, locator)

    def _clips(self, csv_path: Path, split: str, locator: MediaLocator) -> Iterator[ManifestEntry]:
        groups: dict[tuple[str, int], list[tuple[str, str]]] = {}
        first_rows: dict[tuple[str, int], str] = {}
        for row in read_csv(csv_path, COLUMNS):
            ytid = row["youtube_id"].strip()
            if len(ytid) != 11:
                raise row.fail(f"youtube_id {ytid!r} is not an 11-character YouTube id; fix column 'youtube_id'")
            start = row.integer("start_time", allowed=range(0, 10**6))
            groups.setdefault((ytid, start), []).append((row["audiocap_id"].strip(), row["caption"].strip()))
            first_rows.setdefault((ytid, start), row.where())
        for (ytid, start), captions in groups.items():
            path = locator.audio_path(youtube_stems(ytid, start), f"{split}/Y{ytid}.wav", prefer=[split],
                                      where=first_rows[ytid, start])
            yield ManifestEntry(
                id=f"Y{ytid}_{start}",
                path=path,
                captions={"en": [text for _, text in captions]},
                split=split,
                source="audiocaps",
                meta={"youtube_id": ytid, "start": start, "caption_ids": [cid for cid, _ in captions]},
            )
