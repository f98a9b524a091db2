"""The manifest: one JSON object per line describing an item, its texts and labels.

Example line::

    {"id": "Y7fmOlUlwoNg_30", "path": "audio/Y7fmOlUlwoNg_30.wav",
     "captions": {"en": ["a dog barks", "barking dog"], "pt": ["um cão late", "cão latindo"]},
     "labels": {"en": ["dog"], "pt": ["cão"]}, "split": "test", "fold": 1,
     "image": "frames/Y7fmOlUlwoNg_30.jpg", "source": "audiocaps"}

``path`` (and ``image``) are relative to the manifest's data root: the root given with it, by default the
manifest's own folder. They may not leave it (see :mod:`modbind.data.paths`). ``captions`` and ``labels`` are keyed
by language code; ``labels[lang][i]`` translates ``labels["en"][i]``.

One entry may carry the same moment in several modalities: ``items`` names the file of each other
modality (``"items": {"depth": "depth/x.png"}``), so one manifest serves every encoder of a bundle and
``modbind eval --task emergent -o pair=depth`` can pair them. An encoder reads ``items[its modality]``
when present, else ``path``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from modbind.atomic import atomic_open
from modbind.errors import DataError


class ManifestEntry(BaseModel):
    """One item of a dataset (a clip with its captions, labels and optional paired image)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    path: str
    captions: dict[str, list[str]] = Field(default_factory=dict)
    labels: dict[str, list[str]] = Field(default_factory=dict)
    split: str | None = None
    fold: int | None = None
    image: str | None = None
    source: str | None = None
    duration: float | None = None
    sample_rate: int | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    _source: str | None = PrivateAttr(default=None)
    """``manifest.jsonl:12`` for an entry read from a manifest (None when built in memory)."""
    items: dict[str, str] = Field(default_factory=dict)
    """The same entry in other modalities: file per modality name, relative to the root like ``path``."""

    @field_validator("id", "path")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    def __eq__(self, other: object) -> bool:
        """Equal fields make equal entries, whichever file (if any) each was read from."""
        if not isinstance(other, ManifestEntry):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def where(self) -> str:
        """Where this entry came from, for error messages: its manifest line, else its id."""
        return self._source or f"entry '{self.id}'"

    @field_validator("items")
    @classmethod
    def _no_empty_item(cls, value: dict[str, str]) -> dict[str, str]:
        empty = [modality for modality, path in value.items() if not path.strip()]
        if empty:
            raise ValueError(f"the {empty[0]} item must not be empty")
        return value

    def item_path(self, modality: str | None = None) -> str:
        """The file of this entry's ``modality`` item: ``items[modality]`` when given, else ``path``."""
        if modality is not None and modality in self.items:
            return self.items[modality]
        return self.path

    def captions_in(self, language: str) -> list[str]:
        """Non-empty captions in ``language`` (empty list when the language is absent)."""
        return [c for c in self.captions.get(language, []) if c.strip()]


def read_manifest(path: Path) -> list[ManifestEntry]:
    """All entries of a JSONL manifest; a malformed line fails with the file, line and the problem."""
    return list(iter_manifest(path))


def iter_manifest(path: Path) -> Iterator[ManifestEntry]:
    """Entries one by one. Lines are UTF-8; a byte-order mark (Windows editors write one) is ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig").strip()
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{number}: not UTF-8 text (byte {err.start}); re-save the file as UTF-8") from None
            if not line:
                continue
            try:
                entry = ManifestEntry.model_validate(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno})") from None
            except ValidationError as err:
                problems = "; ".join(
                    f"'{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" for e in err.errors()
                )
                raise DataError(f"{path}:{number}: {problems}") from None
            entry._source = f"{path}:{number}"
            yield entry


def write_manifest(entries: Iterable[ManifestEntry], path: Path) -> int:
    """Write entries atomically (temp file + rename); returns how many were written."""
    count = 0
    with atomic_open(path) as handle:
        for entry in entries:  # may be a generator that fails mid-way (bad metadata): the old file stays
            handle.write(json.dumps(entry.model_dump(mode="json", exclude_defaults=True), ensure_ascii=False))
            handle.write("\n")
            count += 1
    return count
