"""Clotho v2.1: one row per clip with 5 captions; development = train, validation = val, evaluation = test.

The optional ``clotho_metadata_<split>.csv`` adds Freesound ids (used by WavCaps' blacklists), keywords
and licence. Official metadata files are ISO-8859-1 and some file names in them are HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

from modbind.data.manifest import ManifestEntry
from modbind.data.metadata import Row, read_csv
from modbind.data.reader_base import MediaLocator, MetadataReader, split_files

CAPTION_COLUMNS = ("file_name", "caption_1", "caption_2", "caption_3", "caption_4", "caption_5")
METADATA_COLUMNS = ("file_name", "keywords", "sound_id")
FOLDERS = {"train": "development", "val": "validation", "test": "evaluation"}


class ClothoReader(MetadataReader):
    name = "clotho"
    splits = ("train", "val", "test")
    split_aliases = {"development": "train", "validation": "val", "evaluation": "test"}
    description = "Clotho v2.1 clotho_captions_<split>.csv (+ clotho_metadata_<split>.csv); evaluation = test"

    def entries(self, root: Path, split: str | None, locator: MediaLocator) -> Iterator[ManifestEntry]:
        templates = ("clotho_captions_{name}.csv", "metadata/clotho_captions_{name}.csv")
        for name, captions_csv in split_files(root, split, self.splits, templates, "Clotho", FOLDERS):
            folder = FOLDERS[name]
            extra = self._metadata(root, folder)
            for row in read_csv(captions_csv, CAPTION_COLUMNS):
                yield self._entry(row, name, folder, extra, locator)

    @staticmethod
    def _entry(row: Row, split: str, folder: str, extra: dict[str, Row], locator: MediaLocator) -> ManifestEntry:
        file_name = row["file_name"].strip()
        if not file_name:
            raise row.fail("empty file_name; every row needs the audio file's name")
        texts = [row[f"caption_{j}"].strip() for j in range(1, 6)]
        meta: dict[str, object] = {"caption_ids": [f"{file_name}#{j}" for j in range(1, 6)]}
        info = extra.get(file_name) or extra.get(html.unescape(file_name))
        if info is not None:
            sound_id = info["sound_id"].strip()
            if sound_id and sound_id != "Not found":
                meta["freesound_id"] = sound_id
            meta["keywords"] = [k for k in info["keywords"].split(";") if k]
            for key in ("license", "manufacturer"):
                if info.fields.get(key):
                    meta[key] = info.fields[key]
        names = dict.fromkeys([file_name, html.unescape(file_name)])  # some names are HTML-escaped in the CSVs
        candidates = (f"{prefix}{folder}/{name}" for name in names for prefix in ("", "clotho_audio_", "audio/"))
        path = locator.exact(*candidates, where=row.where())
        return ManifestEntry(
            id=file_name, path=path, captions={"en": texts}, split=split, source="clotho", meta=meta
        )

    @staticmethod
    def _metadata(root: Path, folder: str) -> dict[str, Row]:
        """Metadata rows by file name, as written and HTML-unescaped; empty when the optional file is absent."""
        for candidate in (f"clotho_metadata_{folder}.csv", f"metadata/clotho_metadata_{folder}.csv", "clotho_metadata.csv"):
            path = root / candidate
            if path.is_file():
                rows = read_csv(path, METADATA_COLUMNS, encodings=("utf-8", "iso-8859-1"))
                table: dict[str, Row] = {}
                for r in rows:
                    name = r["file_name"].strip()
                    table[name] = r
                    table.setdefault(html.unescape(name), r)
                return table
        return {}
