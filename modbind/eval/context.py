"""What a task runs against: one manifest's entries, the shared embedder and the run-wide settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from torch import Tensor

from modbind.contracts import validated
from modbind.data.manifest import ManifestEntry, read_manifest
from modbind.data.paths import ALLOW_ABSOLUTE_FLAG, resolve_under
from modbind.errors import DataError
from modbind.eval.embedder import Embedder
from modbind.eval.metrics import DEFAULT_TIE_POLICY
from modbind.eval.result import TaskResult

PAPER_LANGUAGES: tuple[str, ...] = ("en", "pt", "es", "fr", "de", "zh", "ja", "ru", "tr", "hi", "ar", "sw")
"""The CACARA paper's 12 evaluation languages (also ``EvalConfig.languages``' default)."""


class TaskOptions(BaseModel):
    """Base of every task's options: unknown keys are errors naming the nearest valid key."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def parse(cls, raw: dict[str, Any], task: str) -> "TaskOptions":
        return validated(cls, raw, f"options of task '{task}'")


@dataclass
class EvalContext:
    """A manifest to evaluate on, with the embedder shared by all tasks of a run."""

    embedder: Embedder
    entries: list[ManifestEntry]
    root: Path
    manifest: Path | None = None
    languages: list[str] | None = None
    """Languages asked for on the command line / in the suite; None means the task's default."""
    tie_policy: str = DEFAULT_TIE_POLICY
    label: str | None = None
    """Name of this evaluation in the report (default: the task name and manifest file name)."""
    allow_absolute_paths: bool = False
    """Accept absolute item/image paths (refused by default); relative ones never leave ``root``."""
    modality: str | None = None
    """Which modality of a bundle the items are; None: the model's only one (see :meth:`item_modality`)."""

    @classmethod
    def from_manifest(cls, embedder: Embedder, manifest: Path, root: Path | None = None, **kwargs: Any) -> "EvalContext":
        """The context of one manifest; every item and image path is checked against the root up front."""
        manifest = Path(manifest)
        entries = read_manifest(manifest)
        if not entries:
            raise DataError(f"{manifest}: the manifest has no entries")
        context = cls(embedder, entries, Path(root) if root is not None else manifest.parent, manifest, **kwargs)
        for entry in entries:  # a bad line fails the task before anything is embedded, naming the line
            context.resolve(entry.path, entry.where())
            if entry.image:
                context.resolve(entry.image, entry.where())
        return context

    def languages_or(self, default: Sequence[str]) -> list[str]:
        return list(self.languages) if self.languages else list(default)

    def resolve(self, relative: str, where: str | None = None) -> Path:
        """``relative`` under the context's root (see :mod:`modbind.data.paths`)."""
        return resolve_under(self.root, relative, where=where or str(self.manifest or self.root),
                             allow_absolute=self.allow_absolute_paths,
                             how_to_allow=f"{ALLOW_ABSOLUTE_FLAG} (in a suite: allow_absolute_paths: true on the task)")

    def item_modality(self, besides: str | None = None) -> str:
        """The modality of the items: the task's choice, else the model's only one other than ``besides``."""
        return self.modality or self.embedder.default_modality(besides)

    def item_embeddings(self, entries: Sequence[ManifestEntry], result: TaskResult,
                        modality: str | None = None) -> tuple[Tensor, list[ManifestEntry]]:
        """Model embeddings of the entries whose ``modality`` item decodes; the others are excluded and counted.

        An entry's item is ``items[modality]`` when the manifest names one, else its ``path``.
        """
        modality = modality or self.item_modality()
        paths = [self.resolve(e.item_path(modality), e.where()) for e in entries]
        embeddings, kept, failures = self.embedder.items(paths, modality)
        if failures:
            result.exclude(
                "unreadable_item",
                f"{len(failures)} of {len(entries)} items could not be read and were left out "
                f"(first: {failures[0].key}: {failures[0].reason})",
                len(failures),
                examples=[f"{f.key}: {f.reason}" for f in failures],
            )
        return embeddings, [entries[i] for i in kept]

    def image_embeddings(self, entries: Sequence[ManifestEntry], result: TaskResult) -> tuple[Tensor, list[ManifestEntry]]:
        """Anchor image embeddings of entries with a decodable ``image``; the rest are excluded and counted."""
        with_image = [e for e in entries if e.image]
        missing = len(entries) - len(with_image)
        if missing:
            result.exclude("no_image", f"{missing} of {len(entries)} entries have no 'image' field", missing,
                           examples=[e.id for e in entries if not e.image])
        embeddings, kept, failures = self.embedder.images([self.resolve(e.image or "", e.where()) for e in with_image])
        if failures:
            result.exclude(
                "undecodable_image",
                f"{len(failures)} images could not be decoded and their entries were left out "
                f"(first: {failures[0].key}: {failures[0].reason})",
                len(failures),
                examples=[f"{f.key}: {f.reason}" for f in failures],
            )
        return embeddings, [with_image[i] for i in kept]

    def protocol(self) -> dict[str, Any]:
        """What every task reports about its input."""
        return {
            "manifest": str(self.manifest) if self.manifest else None,
            "root": str(self.root),
            "manifest_entries": len(self.entries),
            "tie_policy": self.tie_policy,
        }


def crop_policy(model: Any | None) -> str:
    """The deterministic evaluation policy, in the plugin's own words."""
    if model is None:
        return "no modality encoder (anchor only)"
    return model.plugin.eval_policy(model.options)


def crop_policy_of(context: EvalContext, modality: str | None = None) -> str:
    """:func:`crop_policy` of the model that encodes the context's (or the given) modality."""
    if context.embedder.model is None:
        return crop_policy(None)
    return crop_policy(context.embedder.model_for(modality or context.item_modality()))
