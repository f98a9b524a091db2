"""Official checkpoints by name: a plugin's table of known files, a verified local cache, downloads.

A plugin lists the official checkpoints it knows (:attr:`modbind.EncoderPlugin.pretrained`), so a recipe
can say ``checkpoint: beats-iter3-plus-as2m`` instead of a path to a file the user had to find.
:func:`resolve_checkpoint` turns such a name into a file under ``<cache root>/checkpoints/<plugin>/``
(the cache root is ``$MODBIND_CACHE_DIR`` or the platform's user cache, see :mod:`modbind.cache`):

* present and verified: used. Verification is the sha256 a public source states for the file, else the
  size it states. A digest is remembered in a marker beside the file, keyed by the file's size and mtime,
  so a 2 GB file is hashed once and not on every run;
* absent: downloaded from the entry's links in order, with a progress bar, into a temporary file in the
  same folder, verified, and only then renamed into place; any failure removes the temporary file;
* absent while downloads are off (``MODBIND_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``; ``file://`` links still
  work) or impossible: one error line gives the link and the exact path to save the file at.

Any other value is a local file path, used as it always was. Nothing here knows about audio.
"""

from __future__ import annotations

import copy
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from modbind.atomic import publish, temp_path_for, write_json_atomic
from modbind.cache import cache_root
from modbind.errors import CheckpointError, ConfigError, did_you_mean

OFFLINE_VARIABLES = ("MODBIND_OFFLINE", "HF_HUB_OFFLINE")
"""Environment variables that, set to 1, keep checkpoint resolution off the network."""
MARKER_SUFFIX = ".verified"
"""``<file>.verified`` remembers the file's sha256 together with the size and mtime it was hashed at."""
_CHUNK = 1 << 20
_TIMEOUT_S = 60


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """One official checkpoint file a plugin knows by name, with what it takes to fetch and trust it."""

    name: str
    """What ``plugin.options.checkpoint`` says, e.g. ``beats-iter3-plus-as2m``; unique across plugins."""
    filename: str
    """Name of the file in the cache folder (the publisher's own name for it)."""
    page: str
    """Where a person gets the file by hand; shown whenever it cannot be downloaded automatically."""
    license: str
    description: str
    urls: tuple[str, ...] = ()
    """Direct download links, tried in order; empty when the host offers none (e.g. a shared folder)."""
    size_bytes: int | None = None
    """The exact size, where a public source states it."""
    sha256: str | None = None
    """The hex digest, where a public source states it (else only the size, if known, is checked)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Plugin options the checkpoint implies (architecture, sample rate, ...); see :func:`with_implied_options`."""
    provenance: str = ""
    """Where each of the facts above comes from."""

    def __post_init__(self) -> None:
        if not self.name or Path(self.filename).name != self.filename or not self.page:
            raise ValueError(f"checkpoint entry {self.name!r}: needs a name, a plain filename and a page")
        if self.sha256 is not None and (len(self.sha256) != 64 or self.sha256.strip("0123456789abcdef")):
            raise ValueError(f"checkpoint entry {self.name!r}: sha256 must be 64 lowercase hex digits")
        object.__setattr__(self, "urls", tuple(self.urls))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def manual_source(self) -> str:
        """Where to get the file by hand: ``<filename> from <page>``, plus the first direct link if any."""
        direct = f" (direct link: {self.urls[0]})" if self.urls and self.urls[0] != self.page else ""
        return f"{self.filename} from {self.page}{direct}"


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """The local file a ``checkpoint`` value stands for."""

    path: Path
    entry: PretrainedCheckpoint | None = None
    """The table entry the value named; None for a local path."""


class _Failed(Exception):
    """One download link did not deliver the right file (the message says why)."""


def checkpoints_dir(cache_dir: Path | None = None) -> Path:
    """The root of the checkpoint cache: ``cache_dir`` when given, else ``<cache root>/checkpoints``."""
    return Path(cache_dir) if cache_dir is not None else cache_root() / "checkpoints"


def cached_path(entry: PretrainedCheckpoint, owner: str, cache_dir: Path | None = None) -> Path:
    """Where ``owner``'s (the plugin's) copy of ``entry`` lives: ``<checkpoints dir>/<owner>/<filename>``."""
    return checkpoints_dir(cache_dir) / owner / entry.filename


def downloads_disabled() -> str | None:
    """The variable that turns downloads off (``MODBIND_OFFLINE`` / ``HF_HUB_OFFLINE`` set to 1), or None."""
    for variable in OFFLINE_VARIABLES:
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return variable
    return None


def named_entry(value: object, table: Mapping[str, PretrainedCheckpoint]) -> PretrainedCheckpoint | None:
    """The entry a ``checkpoint`` value names (only strings name entries; a ``Path`` is always a path)."""
    return table.get(value) if isinstance(value, str) else None


def with_implied_options(
    raw: Mapping[str, Any], table: Mapping[str, PretrainedCheckpoint], model: type[BaseModel], where: str
) -> dict[str, Any]:
    """``raw`` over the options its named checkpoint implies; an explicit contradiction is a ConfigError.

    A user who names a 48 kHz checkpoint and also writes ``sample_rate: 16000`` gets an error naming
    both, not a model that silently hears the wrong audio. Values are compared after validation by
    ``model``'s field types, so ``48000`` and ``48000.0`` agree.
    """
    entry = named_entry(raw.get("checkpoint"), table)
    if entry is None:
        return dict(raw)
    for key, implied in entry.options.items():
        if key in raw and _differ(model, key, raw[key], implied):
            raise ConfigError(
                f"{where}: '{key}: {raw[key]!r}' contradicts checkpoint '{entry.name}', which implies "
                f"'{key}: {implied!r}'; remove '{key}' or choose a checkpoint made for that value")
    return {**copy.deepcopy(dict(entry.options)), **raw}


def resolve_checkpoint(
    value: str | Path,
    table: Mapping[str, PretrainedCheckpoint],
    *,
    owner: str,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> ResolvedCheckpoint:
    """The local file for a ``checkpoint`` option: a name in ``table`` through the cache, else a path.

    A bare word (no folder, no file extension) that is neither a known name nor an existing file is an
    error listing the names ``owner`` knows; anything else is returned as a path for the loader, which
    reports a missing file as it always did.
    """
    entry = named_entry(value, table)
    if entry is not None:
        return ResolvedCheckpoint(fetch_checkpoint(entry, owner=owner, cache_dir=cache_dir, progress=progress), entry)
    path = Path(value)
    if isinstance(value, str) and _looks_like_a_name(value) and not path.exists():
        raise CheckpointError(_unknown_name(value, table, owner))
    return ResolvedCheckpoint(path)


def fetch_checkpoint(
    entry: PretrainedCheckpoint, *, owner: str, cache_dir: Path | None = None, progress: bool = True
) -> Path:
    """``entry``'s cached file, verified; downloaded first when it is not there yet."""
    dest = cached_path(entry, owner, cache_dir)
    if dest.is_file():
        verify_cached(dest, entry, progress=progress)
        return dest
    return download(entry, dest, progress=progress)


def verify_cached(path: Path, entry: PretrainedCheckpoint, *, progress: bool = True) -> None:
    """Raise a CheckpointError unless ``path`` has ``entry``'s published size and sha256 (where known)."""
    problem = _mismatch(entry, path.stat().st_size, lambda: _sha256_remembered(path, progress))
    if problem:
        raise CheckpointError(f"{path}: {problem} of checkpoint '{entry.name}', so it is damaged or another "
                              "file; delete it and run again to download it afresh")


def cache_status(entry: PretrainedCheckpoint, owner: str, cache_dir: Path | None = None) -> str:
    """A short word on ``entry``'s cached copy, found without hashing anything (for listings)."""
    path = cached_path(entry, owner, cache_dir)
    if not path.is_file():
        return "no"
    if entry.size_bytes is not None and path.stat().st_size != entry.size_bytes:
        return "damaged (size)"
    if entry.sha256 is None:
        return "yes (size checked)" if entry.size_bytes is not None else "yes (nothing published to check)"
    recorded = _recorded_sha256(path)
    if recorded is None:
        return "yes (hashed on first use)"
    return "yes (sha256 verified)" if recorded == entry.sha256 else "damaged (sha256)"


def download(entry: PretrainedCheckpoint, dest: Path, *, progress: bool = True) -> Path:
    """Fetch ``entry`` to ``dest`` from the first link that delivers the verified file.

    Each try streams into its own temporary file beside ``dest`` and is renamed over it only after the
    size and sha256 check; whatever fails, the temporary file is removed and ``dest`` is left untouched.
    """
    blocked_by = downloads_disabled()
    urls = [url for url in entry.urls if blocked_by is None or url.startswith("file:")]
    if not urls:
        reason = f"downloads are off ({blocked_by}=1)" if entry.urls else "its host offers no direct download link"
        raise CheckpointError(f"checkpoint '{entry.name}' is not in the cache and {reason}: download "
                              f"{entry.manual_source} and save it as {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        try:
            _download_verified(url, dest, entry, progress)
            return dest
        except _Failed as failure:
            failures.append(f"{url}: {failure}")
    raise CheckpointError(f"could not download checkpoint '{entry.name}' ({'; '.join(failures)}); download "
                          f"{entry.manual_source} yourself and save it as {dest}")


def human_size(size_bytes: int | None) -> str:
    """``1.86 GB``, ``363.1 MB``; ``?`` when no source states the size."""
    if size_bytes is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{size_bytes} B"


def _download_verified(url: str, dest: Path, entry: PretrainedCheckpoint, progress: bool) -> None:
    tmp = temp_path_for(dest)
    try:
        digest, size = _stream(url, tmp, entry, progress)
        problem = _mismatch(entry, size, lambda: digest)
        if problem:
            raise _Failed(problem)
        publish(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if entry.sha256 is not None:
        _remember(dest, digest)


def _stream(url: str, tmp: Path, entry: PretrainedCheckpoint, progress: bool) -> tuple[str, int]:
    """Copy ``url`` into ``tmp``, hashing on the way: (sha256, size). Any transport problem is a _Failed."""
    from tqdm.auto import tqdm

    from modbind import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"modbind/{__version__}"})
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response, open(tmp, "wb") as out:
            if "text/html" in (response.headers.get("Content-Type") or ""):
                raise _Failed("the server sent a web page, not the file")
            announced = int(response.headers.get("Content-Length") or 0) or None
            total = entry.size_bytes or announced
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                      desc=f"downloading {entry.filename}") as bar:
                while chunk := response.read(_CHUNK):
                    if size == 0 and chunk[:512].lstrip().lower().startswith((b"<!doctype html", b"<html")):
                        raise _Failed("the server sent a web page, not the file")
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
                    if entry.size_bytes is not None and size > entry.size_bytes:
                        raise _Failed(f"the server sent more than the published {entry.size_bytes:,} bytes")
            if announced is not None and size != announced:  # the only check for files with no published size
                raise _Failed(f"the transfer stopped after {size:,} of {announced:,} bytes")
    except urllib.error.HTTPError as err:
        raise _Failed(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise _Failed(str(err.reason)) from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise _Failed(str(err) or type(err).__name__) from None
    return digest.hexdigest(), size


def _mismatch(entry: PretrainedCheckpoint, size: int, sha256: Any) -> str:
    """What is wrong with a file of ``size`` bytes whose digest ``sha256()`` gives; '' when it is right."""
    if entry.size_bytes is not None and size != entry.size_bytes:
        return f"got {size:,} bytes, expected the published {entry.size_bytes:,}"
    if entry.sha256 is not None:
        actual = sha256()
        if actual != entry.sha256:
            return f"got sha256 {actual}, expected the published {entry.sha256}"
    return ""


def _sha256_remembered(path: Path, progress: bool) -> str:
    """``path``'s sha256: from its marker when the file is unchanged since, else hashed (and remembered)."""
    recorded = _recorded_sha256(path)
    if recorded is not None:
        return recorded
    digest = _sha256_of(path, progress)
    _remember(path, digest)
    return digest


def _sha256_of(path: Path, progress: bool) -> str:
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with open(path, "rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                         unit_divisor=1024, disable=not progress,
                                         desc=f"verifying {path.name}") as bar:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def _recorded_sha256(path: Path) -> str | None:
    """The digest remembered for ``path``, if the file still has the size and mtime it was hashed at."""
    try:
        record = json.loads(_marker(path).read_text(encoding="utf-8"))
        stat = path.stat()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or (record.get("size"), record.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
        return None
    digest = record.get("sha256")
    return digest if isinstance(digest, str) else None


def _remember(path: Path, digest: str) -> None:
    """Write ``path``'s marker; a cache folder that cannot be written to only costs a re-hash next time."""
    stat = path.stat()
    try:
        write_json_atomic(_marker(path), {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
                          durable=False)
    except OSError:
        pass


def _looks_like_a_name(value: str) -> bool:
    """A bare word: no folder part and no file extension (``beats-iter3``, not ``ckpt/model.pt``)."""
    return "/" not in value and os.sep not in value and not Path(value).suffix


def _unknown_name(value: str, table: Mapping[str, PretrainedCheckpoint], owner: str) -> str:
    if not table:
        return f"checkpoint '{value}' is not a file, and plugin '{owner}' knows no checkpoints by name"
    return (f"checkpoint '{value}' is neither a file nor a checkpoint plugin '{owner}' knows"
            f"{did_you_mean(value, table)}; known: {', '.join(table)} (see `modbind checkpoints`)")


def _differ(model: type[BaseModel], key: str, given: Any, implied: Any) -> bool:
    """Whether ``given`` and ``implied`` are different values of ``model``'s field ``key``.

    A value the field rejects is not reported here: validating the merged options names it properly.
    """
    info = model.model_fields.get(key)
    if info is None:
        return given != implied
    adapter = TypeAdapter(info.annotation)
    try:
        return adapter.validate_python(given) != adapter.validate_python(implied)
    except ValidationError:
        return False
