"""UrbanSound8K: 8,732 slices, 10 classes, 10 predefined folds of unequal size (never reshuffle).

Audio is ``audio/fold{fold}/{slice_file_name}``; a flattened ``audio/{slice_file_name}`` (as WavCaps
assumes) is accepted too. Copies of the CSV differ in float formatting, so start/end are parsed as floats.
"""

from __future__ import annotations

from modbind.data.manifest import ManifestEntry
from modbind.data.metadata import Row
from modbind.data.reader_base import FoldedCsvReader, MediaLocator, class_name

COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")


class UrbanSound8KReader(FoldedCsvReader):
    name = "urbansound8k"
    splits = tuple(f"fold{k}" for k in range(1, 11))
    split_aliases = {str(k): f"fold{k}" for k in range(1, 11)}
    description = "UrbanSound8K metadata/UrbanSound8K.csv, audio/fold<k>/<slice>; all 10 folds unless --split foldK"
    csv_names = ("metadata/UrbanSound8K.csv", "UrbanSound8K.csv")
    dataset_title = "UrbanSound8K"
    columns = COLUMNS

    def row_entry(self, row: Row, locator: MediaLocator) -> ManifestEntry:
        name = row["slice_file_name"].strip()
        fold = row.integer("fold", allowed=range(1, 11), what="fold")
        class_id = row.integer("classID", allowed=range(0, 10), what="classID")
        salience = row.integer("salience", allowed=range(1, 3), what="salience")
        start, end = row.number("start"), row.number("end")
        label = row["class"].strip()
        return ManifestEntry(
            id=name,
            path=locator.exact(f"audio/fold{fold}/{name}", f"audio/{name}", where=row.where()),
            labels={"en": [class_name(label)]},
            split="test",
            fold=fold,
            source="urbansound8k",
            meta={"class_id": class_id, "class": label, "freesound_id": row["fsID"].strip(), "start": start,
                  "end": end, "salience": salience},
        )
