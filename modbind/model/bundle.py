"""Several aligned encoders in one space: exports of one anchor, used together as one model.

Each encoder is aligned on its own, to text only. Because all of them map into the same frozen anchor,
their embeddings share one space: items of one modality retrieve items of another (audio↔depth) though
the two never met in training, and text and pictures go through the one shared anchor.

A bundle folder is self-contained::

    bundle/bundle.json    {"format": "modbind-bundle", "format_version": 1, "anchor_identity": "...",
                           "members": {"audio": "audio", "depth": "depth"}}
    bundle/audio/         an export (card.json + model.safetensors)
    bundle/depth/         an export aligned to the same anchor

``members`` maps each modality to a subfolder of the bundle (never a path that leaves it), so a bundle
moves and copies as one folder. :func:`create_bundle` (``modbind bundle create``) writes one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from modbind.atomic import atomic_path, write_json_atomic
from modbind.config import AnchorConfig
from modbind.errors import CheckpointError, ConfigError
from modbind.model.card import CARD_FILE, WEIGHTS_FILE, read_card
from modbind.model.exported import AlignedModel, build_aligned_model, load_aligned_model

if TYPE_CHECKING:  # pragma: no cover
    from modbind.plugins import Registry

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "modbind-bundle"
BUNDLE_VERSION = 1


class AlignedBundle:
    """Aligned models of different modalities that share one anchor, used as one model.

    ``encode(items, modality=...)`` embeds items of any member's modality (``encode_<modality>`` is the
    same call, e.g. ``encode_depth``); ``encode_text``/``encode_image`` use the one shared anchor.
    """

    def __init__(self, models: Sequence[AlignedModel], sources: Sequence[str] | None = None):
        """``sources`` name where each model came from (export folders), for error messages."""
        names = list(sources) if sources is not None else [f"model {i + 1}" for i in range(len(models))]
        if not models:
            raise ConfigError("a bundle needs at least one aligned model")
        members: dict[str, AlignedModel] = {}
        origin: dict[str, str] = {}
        first = models[0]
        for model, name in zip(models, names):
            check_same_anchor(names[0], first.anchor_identity, name, model.anchor_identity)
            if model.modality in members:
                raise ConfigError(f"{origin[model.modality]} and {name} both encode '{model.modality}'; a bundle "
                                  "holds one model per modality")
            members[model.modality] = model
            origin[model.modality] = name
        self.members = members
        """The member model of each modality, in the order given."""
        self.sources = origin
        self._anchor: Any | None = None

    def __getattr__(self, name: str) -> Any:
        members = self.__dict__.get("members", {})
        if name.startswith("encode_") and name[len("encode_"):] in members:
            return members[name[len("encode_"):]].encode
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.members)

    def member(self, modality: str) -> AlignedModel:
        """The model that encodes ``modality``; the error lists the bundle's modalities."""
        if modality not in self.members:
            raise ConfigError(f"this bundle encodes {', '.join(self.members)}; it has no '{modality}' model")
        return self.members[modality]

    @property
    def anchor_identity(self) -> str | None:
        return next(iter(self.members.values())).anchor_identity

    @property
    def dim(self) -> int:
        return next(iter(self.members.values())).dim

    @property
    def card(self) -> dict[str, Any]:
        """The members' cards by modality, with what they share (anchor) and whether all were trained."""
        cards = {m: model.card for m, model in self.members.items()}
        return {
            "format": BUNDLE_FORMAT,
            "plugin": " + ".join(str(c.get("plugin")) for c in cards.values()),
            "modalities": list(cards),
            "anchor_identity": self.anchor_identity,
            "members": cards,
            "metrics": {"trained": all(c.get("metrics", {}).get("trained", True) for c in cards.values())},
        }

    @property
    def anchor(self) -> Any:
        """The shared frozen anchor, loaded once (through the first member) and handed to every member."""
        if self._anchor is None:
            models = list(self.members.values())
            self._anchor = models[0].anchor
            for model in models[1:]:
                model.use_anchor(self._anchor)
        return self._anchor

    def encode(self, items: Sequence[Any], modality: str | None = None, batch_size: int = 32,
               progress: bool = False, **hints: Any) -> Tensor:
        """Embeddings of ``items`` of ``modality`` (needed when the bundle has several), as ``AlignedModel.encode``."""
        if modality is None:
            if len(self.members) > 1:
                raise ConfigError(f"this bundle encodes {', '.join(self.members)}: pass modality=... "
                                  f"(or call encode_{next(iter(self.members))}(...))")
            modality = next(iter(self.members))
        return self.member(modality).encode(items, batch_size=batch_size, progress=progress, **hints)

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        return self.anchor.encode_text(list(texts), batch_size=batch_size)

    def encode_image(self, images: Sequence[Any], batch_size: int = 64) -> Tensor:
        return self.anchor.encode_image(list(images), batch_size=batch_size)


def check_same_anchor(first: str, first_identity: str | None, other: str, other_identity: str | None) -> None:
    """Refuse to put models of two different anchors into one space, naming both and their anchors."""
    if first_identity != other_identity:
        raise CheckpointError(f"{first} is aligned to anchor '{first_identity}' but {other} to '{other_identity}'; "
                              "a bundle needs models aligned to the same anchor")


def is_bundle(path: Path | str) -> bool:
    return (Path(path) / BUNDLE_FILE).is_file()


def bundle_members(directory: Path | str) -> dict[str, Path]:
    """The member export folder of each modality of a bundle folder, checked to stay inside it."""
    directory = Path(directory)
    path = directory / BUNDLE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable bundle file ({err})") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: format is {found!r}, expected '{BUNDLE_FORMAT}'")
    members = data.get("members")
    if not isinstance(members, dict) or not members:
        raise CheckpointError(f"{path}: 'members' must map each modality to a subfolder, e.g. {{\"audio\": \"audio\"}}")
    resolved = {}
    root = directory.resolve()
    for modality, folder in members.items():
        target = (directory / str(folder)).resolve()
        if not isinstance(folder, str) or Path(folder).is_absolute() or root not in target.parents:
            raise CheckpointError(f"{path}: member '{modality}' is {folder!r}, which is not a subfolder of the "
                                  "bundle; members live inside the bundle folder")
        resolved[str(modality)] = directory / folder
    return resolved


def export_folders(paths: Sequence[Path | str]) -> list[Path]:
    """Export folders, with each bundle folder among ``paths`` replaced by its members."""
    folders: list[Path] = []
    for path in paths:
        folders.extend(bundle_members(path).values() if is_bundle(path) else [Path(path)])
    return folders


def read_cards(paths: Sequence[Path | str]) -> list[tuple[Path, dict[str, Any]]]:
    """(export folder, card) of each export, checked to form one bundle before any weights are read."""
    cards = [(folder, read_card(folder)) for folder in export_folders(paths)]
    if not cards:
        raise ConfigError("give at least one exported model or bundle folder")
    seen: dict[str, Path] = {}
    first_folder, first_card = cards[0]
    for folder, card in cards:
        check_same_anchor(str(first_folder), first_card.get("anchor_identity"), str(folder), card.get("anchor_identity"))
        modality = str(card.get("modality"))
        if modality in seen:
            raise ConfigError(f"{seen[modality]} and {folder} both encode '{modality}'; a bundle holds one model "
                              "per modality")
        seen[modality] = folder
    return cards


def load_bundle(paths: Sequence[Path | str], registry: Registry, device: str = "cpu",
                anchor: AnchorConfig | None = None) -> AlignedBundle:
    """One :class:`AlignedBundle` from exports and bundle folders that share an anchor (``anchor``: load it
    from there instead of the cards' config)."""
    folders = [folder for folder, _ in read_cards(paths)]
    return AlignedBundle([load_aligned_model(f, registry, device=device, anchor=anchor) for f in folders],
                         [str(f) for f in folders])


def untrained_like(paths: Sequence[Path | str], registry: Registry, *, seed: int = 0,
                   device: str = "cpu") -> AlignedModel | AlignedBundle:
    """The chance-level control of exported models: their plugins, options and anchor, seeded random weights.

    One export gives an :class:`AlignedModel`; several (or a bundle folder) an :class:`AlignedBundle`.
    """
    cards = read_cards(paths)
    models = []
    for _, card in cards:
        plugin = registry.encoder(card["plugin"])
        anchor = AnchorConfig.model_validate(card["anchor"])
        models.append(build_aligned_model(plugin, plugin.options(card["plugin_options"]), anchor,
                                          registry.anchor_provider(anchor.model), head=card["head"], seed=seed,
                                          device=device))
    if len(models) == 1 and not any(is_bundle(p) for p in paths):
        return models[0]
    return AlignedBundle(models, [f"untrained {folder}" for folder, _ in cards])


def create_bundle(out: Path | str, exports: Sequence[Path | str]) -> Path:
    """Write a bundle folder holding each export (hard-linked where possible, else copied) and its ``bundle.json``.

    The exports must share an anchor and encode different modalities; ``bundle.json`` is written last, so
    a folder without it is not a bundle.
    """
    out = Path(out)
    cards = read_cards(exports)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; give a new folder for the bundle")
    members = {}
    for folder, card in cards:
        modality = str(card["modality"])
        for name in (WEIGHTS_FILE, CARD_FILE):
            _link_or_copy(folder / name, out / modality / name)
        members[modality] = modality
    write_json_atomic(out / BUNDLE_FILE, {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
                                          "anchor_identity": cards[0][1].get("anchor_identity"),
                                          "members": members})
    return out


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no second copy of large weights) where the filesystem allows, else an atomic copy."""
    if not source.is_file():
        raise CheckpointError(f"{source} is missing; re-export the model")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return
    except OSError:
        pass
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
