"""ESC-50: 2,000 five-second clips, 50 classes, 5 official cross-validation folds.

Labels are ``category`` with spaces (``chirping birds``), the spelling zero-shot prompts use; ``target``
(the class index that fixes class order) stays in ``meta``. The file name encodes fold and target
(``{fold}-{clip}-{take}-{target}.wav``), so rows that contradict their own name are rejected.
"""

from __future__ import annotations

from modbind.data.manifest import ManifestEntry
from modbind.data.metadata import Row
from modbind.data.reader_base import FoldedCsvReader, MediaLocator, class_name

COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
FOLD_SPLITS = tuple(f"fold{k}" for k in range(1, 6))


class ESC50Reader(FoldedCsvReader):
    name = "esc50"
    splits = FOLD_SPLITS
    split_aliases = {str(k): f"fold{k}" for k in range(1, 6)}
    description = "ESC-50 meta/esc50.csv, audio/<filename>; all 5 folds unless --split foldK"
    csv_names = ("meta/esc50.csv", "esc50.csv")
    dataset_title = "ESC-50"
    columns = COLUMNS

    def row_entry(self, row: Row, locator: MediaLocator) -> ManifestEntry:
        filename = row["filename"].strip()
        fold = row.integer("fold", allowed=range(1, 6), what="fold")
        target = row.integer("target", allowed=range(0, 50), what="class index")
        parts = filename.rsplit(".", 1)[0].split("-")
        if len(parts) != 4 or parts[0] != str(fold) or parts[3] != str(target):
            raise row.fail(
                f"filename {filename!r} does not match fold {fold} and target {target} "
                "(expected {fold}-{clip}-{take}-{target}.wav); the row is corrupted"
            )
        esc10 = row["esc10"].strip()
        if esc10 not in ("True", "False"):
            raise row.fail(f"esc10 {esc10!r} is not True or False; fix column 'esc10'")
        category = row["category"].strip()
        return ManifestEntry(
            id=filename,
            path=locator.exact(f"audio/{filename}", where=row.where()),
            labels={"en": [class_name(category)]},
            split="test",
            fold=fold,
            source="esc50",
            meta={"target": target, "category": category, "esc10": esc10 == "True",
                  "freesound_id": row["src_file"].strip(), "take": row["take"].strip()},
        )
