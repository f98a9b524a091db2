"""``data add-translations``: merge externally translated captions or class names into a manifest.

A translation file is CSV (header) or JSONL. Each record has a key and a ``text``:

* ``caption_id`` — one caption: it lands at the same position as the English caption it translates
  (``captions[lang][i]`` translates ``captions["en"][i]``). Caption ids are the dataset's own (AudioCaps
  ``audiocap_id``) as readers store them in ``meta.caption_ids``, else ``<item id>#<1-based index>``.
* ``id`` (or ``item_id``) — the item's captions in order, one record per caption (or a JSON list).
* ``label`` (or ``class``) — a class name in English: ``labels[lang]`` follows ``labels["en"]``.

Everything that did not match (keys not in the manifest, captions or labels left untranslated) is
reported, never silently ignored.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modbind.data.manifest import ManifestEntry
from modbind.data.metadata import read_csv, read_text
from modbind.errors import DataError

KEY_COLUMNS = {"caption_id": "caption", "id": "item", "item_id": "item", "label": "label", "class": "label"}
TEXT_COLUMNS = ("text", "translation", "caption")
_LANGUAGE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


@dataclass
class Translation:
    key: str
    text: list[str]
    where: str


@dataclass
class TranslationReport:
    language: str
    kind: str
    records: int = 0
    matched: int = 0
    unmatched_keys: list[str] = field(default_factory=list)
    untranslated: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"language": self.language, "key": self.kind, "records": self.records, "matched": self.matched,
                "unmatched_keys": self.unmatched_keys, "untranslated": self.untranslated,
                "counts": {"unmatched_keys": len(self.unmatched_keys), "untranslated": len(self.untranslated)}}

    def summary(self) -> str:
        return (f"{self.language}: {self.matched} of {self.records} {self.kind} translations matched; "
                f"{len(self.unmatched_keys)} keys not in the manifest; {len(self.untranslated)} left untranslated")


def caption_ids(entry: ManifestEntry) -> list[str]:
    """Ids of the entry's English captions: the dataset's own when the reader kept them."""
    english = entry.captions.get("en", [])
    stored = entry.meta.get("caption_ids")
    if isinstance(stored, list) and len(stored) == len(english):
        return [str(s) for s in stored]
    return [f"{entry.id}#{j}" for j in range(1, len(english) + 1)]


def read_translations(path: Path) -> tuple[str, list[Translation]]:
    """(key kind, records) of a CSV or JSONL translation file."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path)
    return _read_csv(path)


def _kind_of(columns: list[str], where: str) -> tuple[str, str, str]:
    key = next((c for c in KEY_COLUMNS if c in columns), None)
    text = next((c for c in TEXT_COLUMNS if c in columns), None)
    if key is None or text is None:
        raise DataError(
            f"{where}: needs a key column ({', '.join(KEY_COLUMNS)}) and a text column ({', '.join(TEXT_COLUMNS)}); "
            f"found {', '.join(columns) or 'nothing'}"
        )
    return KEY_COLUMNS[key], key, text


def _read_csv(path: Path) -> tuple[str, list[Translation]]:
    header = next(csv.reader(io.StringIO(read_text(path))), [])
    columns = [c.strip() for c in header]
    kind, key, text = _kind_of(columns, f"{path}:1")
    rows = read_csv(path, (key, text))
    return kind, [Translation(r[key].strip(), [r[text].strip()], r.where()) for r in rows]


def _read_jsonl(path: Path) -> tuple[str, list[Translation]]:
    records: list[Translation] = []
    kind = None
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{number}: expected a JSON object per line")
        this_kind, key, text = _kind_of(list(obj), f"{path}:{number}")
        if kind is not None and this_kind != kind:
            raise DataError(f"{path}:{number}: mixes {this_kind} keys with {kind} keys; use one kind per file")
        kind = this_kind
        value = obj[text]
        texts = [str(v).strip() for v in value] if isinstance(value, list) else [str(value).strip()]
        records.append(Translation(str(obj[key]).strip(), texts, f"{path}:{number}"))
    if kind is None:
        raise DataError(f"{path}: no translations found")
    return kind, records


def add_translations(entries: list[ManifestEntry], language: str, path: Path) -> tuple[list[ManifestEntry], TranslationReport]:
    """Entries with ``captions[language]`` or ``labels[language]`` filled from ``path``, and the report."""
    if not _LANGUAGE.match(language):
        raise DataError(f"language tag {language!r} is not a language code like 'pt', 'de' or 'zh-Hans'")
    if language == "en":
        raise DataError("'en' holds the original captions; translations need another language tag")
    kind, records = read_translations(path)
    report = TranslationReport(language=language, kind=kind, records=len(records))
    merge = {"caption": _merge_captions, "item": _merge_items, "label": _merge_labels}[kind]
    return list(merge(entries, language, records, report)), report


def _unique(records: list[Translation]) -> dict[str, Translation]:
    table: dict[str, Translation] = {}
    for record in records:
        if record.key in table:
            raise DataError(f"{record.where}: key {record.key!r} also appears at {table[record.key].where}; keep one")
        table[record.key] = record
    return table


def _merge_captions(entries: list[ManifestEntry], language: str, records: list[Translation],
                    report: TranslationReport) -> Iterator[ManifestEntry]:
    table = _unique(records)
    used: set[str] = set()
    for entry in entries:
        ids = caption_ids(entry)
        if not ids:
            yield entry
            continue
        texts = []
        for cid in ids:
            record = table.get(cid)
            if record is None:
                report.untranslated.append(cid)
                texts.append("")
            else:
                used.add(cid)
                texts.append(record.text[0])
        yield entry.model_copy(update={"captions": {**entry.captions, language: texts}})
    report.matched = len(used)
    report.unmatched_keys = [k for k in table if k not in used]


def _merge_items(entries: list[ManifestEntry], language: str, records: list[Translation],
                 report: TranslationReport) -> Iterator[ManifestEntry]:
    grouped: dict[str, list[str]] = {}
    for record in records:
        grouped.setdefault(record.key, []).extend(record.text)
    used: set[str] = set()
    for entry in entries:
        texts = grouped.get(entry.id)
        if texts is None:
            if entry.captions.get("en"):
                report.untranslated.append(entry.id)
            yield entry
            continue
        used.add(entry.id)
        yield entry.model_copy(update={"captions": {**entry.captions, language: texts}})
    report.matched = sum(1 for r in records if r.key in used)
    report.unmatched_keys = [k for k in grouped if k not in used]


def _merge_labels(entries: list[ManifestEntry], language: str, records: list[Translation],
                  report: TranslationReport) -> Iterator[ManifestEntry]:
    table = _unique(records)
    used: set[str] = set()
    missing: set[str] = set()
    for entry in entries:
        english = entry.labels.get("en", [])
        if not english:
            yield entry
            continue
        translated = []
        for label in english:
            record = table.get(label)
            if record is None:
                missing.add(label)
                translated.append("")
            else:
                used.add(label)
                translated.append(record.text[0])
        yield entry.model_copy(update={"labels": {**entry.labels, language: translated}})
    report.matched = len(used)
    report.unmatched_keys = [k for k in table if k not in used]
    report.untranslated = sorted(missing)
