"""What the built-in dataset readers share: split names, locating media files, building entries.

A reader turns metadata rows into :class:`ManifestEntry` objects whose ``path`` (and ``image``) is relative
to the media root (the dataset root unless ``media_root`` is given). When a file cannot be found the entry
still carries the conventional path, so ``data prepare`` can report it as missing instead of the reader
silently dropping it. File names read from metadata never leave the media root: a name that climbs out of
it, or an absolute one, fails naming the metadata file and row before anything is looked up on disk.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from modbind.audio.io import AUDIO_EXTENSIONS
from modbind.contracts import DatasetReader
from modbind.data.audio_index import IMAGE_EXTENSIONS, MediaIndex
from modbind.data.manifest import ManifestEntry
from modbind.data.metadata import Row, read_csv
from modbind.data.paths import resolve_under
from modbind.errors import DataError, did_you_mean


class MediaLocator:
    """Looks up audio (and image) files under a dataset's media root; returns paths relative to it."""

    def __init__(self, media_root: Path):
        self.media_root = Path(media_root)
        self.audio = MediaIndex(self.media_root, AUDIO_EXTENSIONS)
        self.images = MediaIndex(self.media_root, IMAGE_EXTENSIONS)

    def audio_path(self, stems: Sequence[str], default: str, *, where: str, within: Sequence[str] = (),
                   prefer: Sequence[str] = ()) -> str:
        """The found audio file, or ``default`` when none is on disk; ``where`` names the metadata row."""
        self._inside(default, where)
        found = self.audio.find(stems, within=within, prefer=prefer)
        return found if found is not None else default

    def exact(self, relative: str, *alternatives: str, where: str) -> str:
        """``relative`` if it exists under the media root, else the first alternative that does, else a file
        of the same name anywhere under the media root (preferring the same folder names), else ``relative``.

        Every candidate comes from metadata (``where``), so each is checked to stay under the media root
        before it is looked up."""
        candidates = (relative, *alternatives)
        for candidate in candidates:
            self._inside(candidate, where)
        for candidate in candidates:
            if (self.media_root / candidate).is_file():
                return candidate
        stems = [os.path.splitext(os.path.basename(c))[0] for c in candidates]
        folders = [part for c in candidates for part in Path(c).parts[:-1]]
        found = self.audio.find(dict.fromkeys(stems), prefer=folders)
        return found if found is not None else relative

    def image_path(self, stem: str) -> str | None:
        """A frame for a clip: ``<stem>.jpg`` anywhere, or the middle image of a folder named ``<stem>``."""
        return self.images.find([stem]) or self.images.find_in_folder(stem)

    def _inside(self, relative: str, where: str) -> None:
        resolve_under(self.media_root, relative, where=where, how_to_allow=None)


class MetadataReader(DatasetReader):
    """Base of the built-in readers: split checking and the ``media_root`` option."""

    split_aliases: ClassVar[dict[str, str]] = {}
    """Other accepted spellings of split names (e.g. Clotho's ``evaluation`` → ``test``)."""
    pairs_images: ClassVar[bool] = False
    """Whether items come with a video frame (``image``) that ``data prepare`` should check."""

    def read(self, root: Path, split: str | None = None, *, media_root: Path | None = None) -> Iterator[ManifestEntry]:
        """Entries of ``split`` (all splits when None); ``media_root`` is where audio lives if not under ``root``
        (entry paths are relative to it).

        The folder and split are checked now, before anything is written; metadata rows are read lazily.
        """
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{self.name}: dataset folder not found: {root}")
        resolved = self.resolve_split(split)
        return self.entries(root, resolved, MediaLocator(media_root if media_root is not None else root))

    def resolve_split(self, split: str | None) -> str | None:
        if split is None:
            return None
        key = self.split_aliases.get(split.lower(), split.lower())
        if key not in self.splits:
            names = [*self.splits, *self.split_aliases]
            raise DataError(
                f"{self.name} has no split '{split}'{did_you_mean(split, names)}; choose one of {', '.join(self.splits)}"
            )
        return key

    @abc.abstractmethod
    def entries(self, root: Path, split: str | None, locator: MediaLocator) -> Iterator[ManifestEntry]:
        """Read the metadata of ``split`` (None = all) and yield entries."""


def class_name(raw: str) -> str:
    """A class label as zero-shot prompts use it: ``chirping_birds`` → ``chirping birds``."""
    return raw.replace("_", " ").strip()


def split_files(
    root: Path, split: str | None, splits: Sequence[str], templates: Sequence[str], what: str,
    names: Mapping[str, str] | None = None,
) -> list[tuple[str, Path]]:
    """(split, metadata file) for the requested split, or for every split present when ``split`` is None.

    ``templates`` are paths relative to ``root`` with ``{name}`` standing for the split's file name part
    (``names[split]``, default the split itself). Fails naming the expected files when the requested split's
    file (or, for None, every split's file) is missing.
    """

    def candidates(split_name: str) -> list[str]:
        return [t.format(name=(names or {}).get(split_name, split_name)) for t in templates]

    chosen = [split] if split else list(splits)
    found: list[tuple[str, Path]] = []
    for name in chosen:
        path = next((root / c for c in candidates(name) if (root / c).is_file()), None)
        if path is not None:
            found.append((name, path))
        elif split is not None:
            tried = ", ".join(str(root / c) for c in candidates(name))
            raise DataError(f"{what} {name} metadata not found; looked for {tried}. Point --root at the dataset's folder")
    if not found:
        tried = ", ".join(str(root / c) for name in chosen for c in candidates(name)[:1])
        raise DataError(f"no {what} metadata under {root} (expected {tried}); point --root at the dataset's folder")
    return found


class FoldedCsvReader(MetadataReader):
    """A classification set in one CSV with a fold column (ESC-50, UrbanSound8K); ``--split foldK`` picks a fold."""

    csv_names: ClassVar[tuple[str, ...]]
    """Where the CSV may lie under the dataset root, first match wins."""
    dataset_title: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]

    def entries(self, root: Path, split: str | None, locator: MediaLocator) -> Iterator[ManifestEntry]:
        [(_, csv_path)] = split_files(root, None, ("all",), self.csv_names, self.dataset_title)
        wanted = int(split[4:]) if split else None
        for row in read_csv(csv_path, self.columns):
            entry = self.row_entry(row, locator)
            if wanted is None or entry.fold == wanted:
                yield entry

    @abc.abstractmethod
    def row_entry(self, row: Row, locator: MediaLocator) -> ManifestEntry:
        """The manifest entry of one CSV row (raise ``row.fail(...)`` for a malformed row)."""
