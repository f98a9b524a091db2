"""WavCaps: one JSON file per source (``json_files/<Source>/<x>_final.json``), one caption per clip.

WavCaps has no splits; its "splits" here are its four sources so one can be prepared at a time. Ids are
only unique within a source (SoundBible ``"2219"`` vs Freesound ``"2219"``), so audio is looked up inside
the source's own folder. Blacklists are applied by :mod:`modbind.data.overlap`, which matches the ids kept
here in ``meta`` (``youtube_id`` for AudioSet_SL, ``freesound_id`` for FreeSound).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modbind.data.audio_index import parse_youtube_clip_id
from modbind.data.manifest import ManifestEntry
from modbind.data.metadata import read_json
from modbind.data.reader_base import MediaLocator, MetadataReader
from modbind.errors import DataError


@dataclass(frozen=True)
class Source:
    split: str
    folder: str
    json_name: str
    folder_keys: tuple[str, ...]
    """Folder-name keys that identify this source's audio folder in any download layout."""
    meta_keys: tuple[str, ...]


SOURCES = (
    Source("soundbible", "SoundBible", "sb_final.json", ("soundbible",), ("title", "description", "author")),
    Source("freesound", "FreeSound", "fsd_final.json", ("freesound", "fsd"), ("description", "tags", "author", "file_name")),
    Source("bbc_sound_effects", "BBC_Sound_Effects", "bbc_final.json", ("bbc",), ("description", "category")),
    Source("audioset_sl", "AudioSet_SL", "as_final.json", ("audioset", "as_sl"), ()),
)


class WavCapsReader(MetadataReader):
    name = "wavcaps"
    splits = tuple(s.split for s in SOURCES)
    split_aliases = {"sb": "soundbible", "fsd": "freesound", "bbc": "bbc_sound_effects", "as": "audioset_sl",
                     "audioset": "audioset_sl"}
    description = "WavCaps json_files/<Source>/*_final.json; 'splits' are the sources (no official splits)"

    def entries(self, root: Path, split: str | None, locator: MediaLocator) -> Iterator[ManifestEntry]:
        chosen = [s for s in SOURCES if split in (None, s.split)]
        found_any = False
        for source in chosen:
            json_path = self._json_path(root, source)
            if json_path is None:
                if split is not None:
                    raise DataError(
                        f"WavCaps {source.folder} metadata not found: expected {root / 'json_files' / source.folder / source.json_name}"
                    )
                continue
            found_any = True
            yield from self._source_entries(json_path, source, locator)
        if not found_any:
            raise DataError(f"no WavCaps json files under {root / 'json_files'}; point --root at the WavCaps folder")

    @staticmethod
    def _json_path(root: Path, source: Source) -> Path | None:
        for candidate in (root / "json_files" / source.folder / source.json_name, root / source.folder / source.json_name,
                          root / source.json_name):
            if candidate.is_file():
                return candidate
        return None

    def _source_entries(self, json_path: Path, source: Source, locator: MediaLocator) -> Iterator[ManifestEntry]:
        document = read_json(json_path)
        if not isinstance(document, dict) or not isinstance(document.get("data"), list):
            raise DataError(f"{json_path}: expected an object with a 'data' list (WavCaps layout); re-download the file")
        per_audio = document.get("num_captions_per_audio", 1)
        caption_keys = ["caption"] if per_audio == 1 else [f"caption_{j}" for j in range(1, int(per_audio) + 1)]
        for number, item in enumerate(document["data"]):
            yield self._entry(json_path, number, item, caption_keys, source, locator)

    @staticmethod
    def _entry(json_path: Path, number: int, item: Any, caption_keys: list[str], source: Source,
               locator: MediaLocator) -> ManifestEntry:
        where = f"{json_path}: data[{number}]"
        if not isinstance(item, dict):
            raise DataError(f"{where} is not an object; each entry needs 'id' and 'caption'")
        missing = [k for k in ("id", *caption_keys) if k not in item]
        if missing:
            label = f" (id {item['id']!r})" if "id" in item else ""
            raise DataError(f"{where}{label} lacks {', '.join(repr(m) for m in missing)}; re-download the WavCaps json")
        raw_id = str(item["id"]).strip()
        stem = raw_id.rsplit(".", 1)[0] if raw_id.endswith((".wav", ".flac")) else raw_id
        meta: dict[str, Any] = {"wavcaps_id": raw_id}
        if source.split == "audioset_sl":
            ytid, _ = parse_youtube_clip_id(raw_id)
            if ytid is not None:
                meta["youtube_id"] = ytid
        if source.split == "freesound":
            meta["freesound_id"] = raw_id
        for key in source.meta_keys:
            if item.get(key) not in (None, "", []):
                meta[key] = item[key]
        duration = item.get("duration")
        path = locator.audio_path([stem], f"Zip_files/{source.folder}/{stem}.flac", within=source.folder_keys,
                                  where=where)
        return ManifestEntry(
            id=f"{source.split}/{stem}",
            path=path,
            captions={"en": [str(item[k]).strip() for k in caption_keys]},
            split="train",
            source=f"wavcaps/{source.folder}",
            duration=float(duration) if isinstance(duration, (int, float)) else None,
            meta=meta,
        )
