"""``modbind embed``: a user's collection (files, folders, a manifest, texts) to L2-normalised embeddings with ids.

Items of the model's modality (of each modality, for a bundle) go through its aligned encoder; pictures
through the anchor's image tower; texts through its text tower — all land in the same space. A file's
modality comes from its extension (the plugins' ``file_extensions``) unless ``--modality`` names it.
Unreadable inputs are skipped and listed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from modbind.atomic import atomic_open, atomic_path, write_json_atomic
from modbind.data.manifest import read_manifest
from modbind.data.paths import resolve_under
from modbind.errors import ConfigError, DataError
from modbind.eval.embedder import IMAGE_EXTENSIONS, Embedder, Failure

Kind = Literal["item", "image", "text"]
TEXT_EXTENSIONS = (".txt",)
MANIFEST_EXTENSIONS = (".jsonl",)


@dataclass
class Input:
    id: str
    kind: Kind
    path: Path | None = None
    text: str | None = None
    modality: str | None = None
    """For items: which modality (of a bundle) encodes it."""


@dataclass
class Collection:
    inputs: list[Input] = field(default_factory=list)
    skipped: list[Failure] = field(default_factory=list)


def collect(paths: Sequence[Path], texts: Sequence[str], extensions: Mapping[str, Sequence[str]], *,
            kind: str = "auto", modality: str | None = None, allow_absolute_paths: bool = False) -> Collection:
    """Expand files, folders and manifests into inputs; unknown file types are skipped and listed.

    ``extensions`` lists the file endings each modality of the model reads; ``modality`` (one of them)
    makes every item that modality's. Paths inside a manifest must stay in the manifest's folder (absolute
    ones only with ``allow_absolute_paths``); one that does not fails the whole call, naming the line.
    """
    found = Collection()
    if modality is not None:
        extensions = {modality: extensions[modality]}
    for index, text in enumerate(texts):
        found.inputs.append(Input(f"text:{index}", "text", text=text))
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                _add_file(found, file, extensions, kind, from_folder=True)
        elif path.suffix.lower() in MANIFEST_EXTENSIONS:
            _add_manifest(found, path, kind, list(extensions), allow_absolute_paths)
        elif path.is_file():
            _add_file(found, path, extensions, kind, from_folder=False)
        else:
            found.skipped.append(Failure(str(path), "no such file or folder"))
    return found


def _add_file(found: Collection, path: Path, extensions: Mapping[str, Sequence[str]], kind: str, *,
              from_folder: bool) -> None:
    suffix = path.suffix.lower()
    claimed = [m for m, endings in extensions.items() if suffix in endings]
    chosen: str | None = kind if kind != "auto" else None
    if chosen is None:
        if claimed:
            chosen = "item"
        elif suffix in IMAGE_EXTENSIONS:
            chosen = "image"
        elif suffix in TEXT_EXTENSIONS:
            chosen = "text"
    if chosen is None:
        known = ", ".join(e for endings in extensions.values() for e in endings)
        found.skipped.append(Failure(str(path), f"unknown file type '{suffix}' (expected {known}, "
                                                "an image or a .txt of one text per line)"))
        return
    if chosen == "item":
        modalities = claimed or list(extensions)
        if len(modalities) != 1:
            reason = (f"'{suffix}' could be {' or '.join(modalities)}: choose with --modality" if modalities
                      else "no aligned model to encode items: pass an exported MODEL")
            found.skipped.append(Failure(str(path), reason))
            return
        found.inputs.append(Input(str(path), "item", path=path, modality=modalities[0]))
        return
    if chosen == "text":
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            found.skipped.append(Failure(str(path), f"cannot read as UTF-8 text ({err})"))
            return
        found.inputs.extend(Input(f"{path}:{n}", "text", text=line.strip())
                            for n, line in enumerate(lines, start=1) if line.strip())
        return
    found.inputs.append(Input(str(path), chosen, path=path))  # type: ignore[arg-type]


def _add_manifest(found: Collection, path: Path, kind: str, modalities: list[str], allow_absolute: bool) -> None:
    """A manifest's texts, pictures or items; an entry's item of each modality is ``items[m]``, else ``path``.

    For several modalities each entry gives one item per modality it names in ``items``, plus ``path`` for
    the one modality it does not name (ids ``<id>#<modality>``). Every path used stays under the manifest's
    folder (:mod:`modbind.data.paths`).
    """
    root = path.parent
    for entry in read_manifest(path):
        def under(relative: str, where: str = entry.where()) -> Path:
            return resolve_under(root, relative, where=where, allow_absolute=allow_absolute)

        if kind == "text":
            for language, captions in entry.captions.items():
                found.inputs.extend(Input(f"{entry.id}#{language}#{j}", "text", text=c)
                                    for j, c in enumerate(captions) if c.strip())
        elif kind == "image":
            if entry.image:
                found.inputs.append(Input(entry.id, "image", path=under(entry.image)))
            else:
                found.skipped.append(Failure(entry.id, "manifest entry has no 'image'"))
        elif len(modalities) == 1:
            found.inputs.append(Input(entry.id, "item", path=under(entry.item_path(modalities[0])),
                                      modality=modalities[0]))
        else:
            _add_entry_items(found, entry, under, modalities)


def _add_entry_items(found: Collection, entry: Any, under: Callable[[str], Path], modalities: list[str]) -> None:
    """One input per modality of a multi-modality model; ``path`` is only unambiguous for one unnamed modality."""
    unnamed = [m for m in modalities if m not in entry.items]
    for modality in modalities:
        if modality in entry.items or len(unnamed) == 1:
            found.inputs.append(Input(f"{entry.id}#{modality}", "item", path=under(entry.item_path(modality)),
                                      modality=modality))
    if len(unnamed) > 1:
        found.skipped.append(Failure(f"{entry.id}#{'/'.join(unnamed)}", f"'path' could be {' or '.join(unnamed)}: "
                                     "name each in the entry's 'items', or choose one with --modality"))


def embed_collection(embedder: Embedder, collection: Collection) -> tuple[Tensor, list[Input], list[Failure]]:
    """Embeddings in input order (failed inputs left out), the embedded inputs, and every skipped one."""
    skipped = list(collection.skipped)
    rows: dict[int, Tensor] = {}
    groups = {(inp.kind, inp.modality) for inp in collection.inputs if inp.kind != "text"}
    for kind, modality in sorted(groups, key=lambda g: (g[0] != "item", g[1] or "")):
        picked = [i for i, inp in enumerate(collection.inputs) if (inp.kind, inp.modality) == (kind, modality)]
        paths = [collection.inputs[i].path for i in picked]
        if kind == "item":
            embeddings, kept, failures = embedder.items(paths, modality)  # type: ignore[arg-type]
        else:
            embeddings, kept, failures = embedder.images(paths)  # type: ignore[arg-type]
        rows.update({picked[k]: e for k, e in zip(kept, embeddings)})
        skipped.extend(failures)
    texts = [i for i, inp in enumerate(collection.inputs) if inp.kind == "text"]
    if texts:
        rows.update(zip(texts, embedder.texts([collection.inputs[i].text or "" for i in texts])))
    order = sorted(rows)
    if not order:
        raise DataError("nothing could be embedded: " + ("; ".join(f"{f.key}: {f.reason}" for f in skipped[:5])
                                                          or "no inputs given"))
    return torch.stack([rows[i] for i in order]).float(), [collection.inputs[i] for i in order], skipped


def save_embeddings(out: Path, embeddings: Tensor, inputs: Sequence[Input], skipped: Sequence[Failure],
                    info: dict[str, Any]) -> list[Path]:
    """``.safetensors`` (ids etc. in the metadata) or ``.npy`` + ``<out>.ids.json``, written atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"ids": [i.id for i in inputs], "kinds": [i.kind for i in inputs],
            "modalities": [i.modality for i in inputs],
            "skipped": [{"input": f.key, "reason": f.reason} for f in skipped], **info}
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        with atomic_path(out) as tmp:
            save_file({"embeddings": embeddings.contiguous()}, str(tmp),
                      metadata={k: json.dumps(v, ensure_ascii=False) for k, v in meta.items()})
        return [out]
    if out.suffix == ".npy":
        with atomic_open(out, "wb") as handle:
            np.save(handle, embeddings.numpy())
        sidecar = out.with_name(out.name[: -len(".npy")] + ".ids.json")
        write_json_atomic(sidecar, meta)
        return [out, sidecar]
    raise ConfigError(f"--out must end in .safetensors or .npy, got '{out.name}'")
