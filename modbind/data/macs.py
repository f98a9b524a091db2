"""MACS: ``MACS.yaml`` (2-5 annotator captions per TAU Urban Acoustic Scenes 2019 clip), single split.

Optional extras: ``MACS_competence.csv`` (tab-separated annotator competence, kept per caption in
``meta``) and TAU's tab-separated ``meta.csv`` for the scene label; without it the scene is read from the
file name (``<scene>-<city>-<location>-<segment>-<device>.wav``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modbind.data.manifest import ManifestEntry
from modbind.data.metadata import read_csv, read_yaml
from modbind.data.reader_base import MediaLocator, MetadataReader, class_name, split_files
from modbind.errors import DataError


class MACSReader(MetadataReader):
    name = "macs"
    splits = ("full",)
    split_aliases = {"train": "full"}
    description = "MACS MACS.yaml (+ MACS_competence.csv, TAU meta.csv); audio/<filename> from TAU 2019 dev"

    def entries(self, root: Path, split: str | None, locator: MediaLocator) -> Iterator[ManifestEntry]:
        [(_, yaml_path)] = split_files(root, None, ("full",), ("MACS.yaml", "macs.yaml"), "MACS")
        document = read_yaml(yaml_path)
        files = document.get("files") if isinstance(document, dict) else None
        if not isinstance(files, list):
            raise DataError(f"{yaml_path}: expected a top-level 'files' list (MACS layout); re-download MACS.yaml")
        competence = self._competence(root)
        scenes = self._scenes(root)
        for number, item in enumerate(files):
            yield self._entry(yaml_path, number, item, competence, scenes, locator)

    @staticmethod
    def _entry(yaml_path: Path, number: int, item: Any, competence: dict[str, float], scenes: dict[str, str],
               locator: MediaLocator) -> ManifestEntry:
        where = f"{yaml_path}: files[{number}]"
        if not isinstance(item, dict) or "filename" not in item or not isinstance(item.get("annotations"), list):
            raise DataError(f"{where}: each entry needs 'filename' and an 'annotations' list")
        filename = str(item["filename"]).strip()
        sentences, annotators, tags = [], [], []
        for k, note in enumerate(item["annotations"]):
            if not isinstance(note, dict) or not str(note.get("sentence", "")).strip():
                raise DataError(f"{where} ({filename}) annotations[{k}]: missing 'sentence'")
            sentences.append(str(note["sentence"]).strip())
            annotators.append(str(note.get("annotator_id", "")))
            tags.append([str(t) for t in note.get("tags") or []])
        scene = scenes.get(filename) or filename.split("-", 1)[0]
        meta: dict[str, Any] = {"annotator_ids": annotators, "tags": tags,
                                "caption_ids": [f"{filename}#{a}" for a in annotators]}
        if competence:
            meta["competence"] = [competence.get(a) for a in annotators]
        return ManifestEntry(
            id=filename,
            path=locator.exact(f"audio/{filename}", filename, where=where),
            captions={"en": sentences},
            labels={"en": [class_name(scene)]},
            split="train",
            source="macs",
            meta=meta,
        )

    @staticmethod
    def _competence(root: Path) -> dict[str, float]:
        path = root / "MACS_competence.csv"
        if not path.is_file():
            return {}
        return {r["annotator_id"].strip(): r.number("competence")
                for r in read_csv(path, ("annotator_id", "competence"), delimiter="\t")}

    @staticmethod
    def _scenes(root: Path) -> dict[str, str]:
        path = root / "meta.csv"
        if not path.is_file():
            return {}
        return {Path(r["filename"].strip()).name: r["scene_label"].strip()
                for r in read_csv(path, ("filename", "scene_label"), delimiter="\t")}
