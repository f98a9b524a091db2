"""Read model weights from checkpoint files without running code stored in them.

Every encoder plugin loads released checkpoints through :func:`read_checkpoint`. Released files come in two
shapes: ``.safetensors`` (pure data) and torch pickles written by training scripts, which often carry more
than weights: the epoch, optimizer and scaler state, an ``argparse.Namespace`` of arguments, Lightning
callback state. Pickles are opened with ``torch.load(weights_only=True)``, whose unpickler only builds
tensors, containers and the types on an allow-list; the allow-list below adds types that are plain data
(building them runs no file-controlled code). Anything else makes the load fail with a
:class:`~modbind.errors.CheckpointError` instead of executing.

Where the weights are: the first of ``model``, ``state_dict``, ``module``, ``model_state_dict`` whose
value is a dict holding tensors, or, when none fits, the top-level dict itself if all its values are
tensors. Everything else at the top level is reported in ``skipped``; the entries among it that hold no
tensors (configs, epoch, arguments) are also kept in ``metadata`` for plugins that need them (e.g. BEATs'
``cfg``).

Plugins check the weights against their model with :func:`compare_state`, whose
:meth:`StateMismatch.describe` lists the missing, unexpected and wrong-shape keys for the error message.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import pickle
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modbind.errors import CheckpointError, exception_reason

# Top-level keys that hold the state dict, in the order they are tried.
WEIGHT_KEYS: tuple[str, ...] = ("model", "state_dict", "module", "model_state_dict")


@dataclass
class CheckpointFile:
    """What a checkpoint file holds: its flat state dict, plain-data extras, and what was not used."""

    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _numpy_globals() -> list[tuple[Any, str]]:
    """Numpy scalars, dtypes and arrays: training scripts store metrics as ``np.float64``.

    Numpy pickles them through module paths that changed in numpy 2 (``numpy.core`` → ``numpy._core``), so
    both spellings are listed. Rebuilding them only copies raw bytes into a new scalar or array.
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray

    names: list[tuple[Any, str]] = []
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        names += [(multiarray.scalar, f"{module}.scalar"), (multiarray._reconstruct, f"{module}._reconstruct")]
    names += [(np.dtype, "numpy.dtype"), (np.ndarray, "numpy.ndarray")]
    for dtype_class_name in dir(np.dtypes):
        dtype_class = getattr(np.dtypes, dtype_class_name)
        if isinstance(dtype_class, type) and issubclass(dtype_class, np.dtype):
            names.append((dtype_class, f"numpy.dtypes.{dtype_class_name}"))
    return names


def _allowed_globals() -> list[Any]:
    """Types beyond torch's defaults that training scripts store beside weights; all are inert data.

    Containers other than ``list``/``dict``/``OrderedDict``/``Counter`` (``defaultdict``, ``deque``,
    Lightning's ``AttributeDict``) cannot be added: torch's restricted unpickler only fills those. Such
    files are refused with a clear error.
    """
    plain: list[Any] = [
        argparse.Namespace,
        int, float, bool, str, bytes, list, dict, tuple, set, frozenset, complex, slice, range,
        torch.torch_version.TorchVersion,
    ]
    # Paths load as pure paths: a WindowsPath cannot be instantiated on Linux (nor PosixPath on Windows), and
    # the weights never need file-system access. Python 3.13 moved the classes to pathlib._local.
    pure = {"PurePath": pathlib.PurePath, "Path": pathlib.PurePath,
            "PurePosixPath": pathlib.PurePosixPath, "PosixPath": pathlib.PurePosixPath,
            "PureWindowsPath": pathlib.PureWindowsPath, "WindowsPath": pathlib.PureWindowsPath}
    paths = [(cls, f"{module}.{name}") for name, cls in pure.items() for module in ("pathlib", "pathlib._local")]
    return plain + paths + _numpy_globals()


def read_checkpoint(path: Path) -> CheckpointFile:
    """Load ``path`` (.safetensors or a torch pickle) onto the CPU, never executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; set plugin.options.checkpoint to an existing file "
                              "or to a name that `modbind checkpoints` lists")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the download or save did not finish; fetch or save it again")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _split_weights(path, load_pickle(path))


def _read_safetensors(path: Path) -> CheckpointFile:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exception_reason(exc)}") from exc
    return CheckpointFile(path=path, tensors=tensors, metadata={k: _decode_json(v) for k, v in header.items()})


def _decode_json(value: str) -> Any:
    """Safetensors metadata values are strings; JSON objects/arrays in them (e.g. ``cfg``) are decoded."""
    if value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


_GLOBAL_PATTERN = re.compile(r"GLOBAL ([\w.]+)")
_REASON_PATTERN = re.compile(r"WeightsUnpickler error:\s*(.+)")


RESAVE_HINT = "If you trust the file, re-save its weights as .safetensors and load that instead."


def load_pickle(path: Path, *, extra_globals: Iterable[Any] = (), map_location: Any = "cpu", mmap: bool = True,
                hint: str = RESAVE_HINT) -> Any:
    """``torch.load(weights_only=True)`` with the allow-list (plus ``extra_globals``, e.g. a trainer's own
    state types); an object off the list, or a damaged file, raises a :class:`CheckpointError` ending in ``hint``.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals([*_allowed_globals(), *extra_globals]):
            if mmap:
                try:
                    return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
                except RuntimeError as exc:
                    if "mmap" not in str(exc):
                        raise
                    # Files from the legacy (pre-zip) torch format cannot be memory-mapped.
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL_PATTERN.search(str(exc))
        reason = _REASON_PATTERN.search(str(exc))
        what = (f"the object '{found.group(1)}'" if found
                else f"an object it cannot rebuild safely ({reason.group(1).strip()})" if reason else "an object")
        raise CheckpointError(
            f"refusing to load {path}: it contains {what}, which is not on modbind's allow-list of plain-data "
            f"types, and building it could run code from the file. {hint}"
        ) from exc
    except Exception as exc:  # a corrupt file fails anywhere inside torch.load; say which file it was
        raise CheckpointError(
            f"{path} is neither a .safetensors file nor a readable torch checkpoint: {exception_reason(exc)}") from exc


def _is_tensor_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and any(isinstance(v, torch.Tensor) for v in value.values())


def _holds_tensors(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, Mapping):
        return any(_holds_tensors(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensors(v) for v in value)
    return False


def _describe(key: str, value: Any) -> str:
    return f"{key} ({type(value).__name__})"


def _split_weights(path: Path, loaded: Any) -> CheckpointFile:
    """Pick the state dict out of a loaded pickle; everything else goes to ``skipped``/``metadata``."""
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(loaded).__name__}, not a dict of weights; save the model's state_dict()")
    weights_key = next((k for k in WEIGHT_KEYS if _is_tensor_dict(loaded.get(k))), None)
    if weights_key is not None:
        weights, rest = loaded[weights_key], {k: v for k, v in loaded.items() if k != weights_key}
    elif loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        weights, rest = loaded, {}
    else:
        found = ", ".join(_describe(str(k), v) for k, v in loaded.items()) or "nothing"
        raise CheckpointError(
            f"no weights found in {path}: expected a dict of tensors under one of {list(WEIGHT_KEYS)} or at the "
            f"top level, found {found}")
    prefix = f"{weights_key}." if weights_key else ""
    tensors = {str(k): v for k, v in weights.items() if isinstance(v, torch.Tensor)}
    skipped = [_describe(f"{prefix}{k}", v) for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    skipped += [_describe(str(k), v) for k, v in rest.items()]
    metadata = {str(k): v for k, v in rest.items() if not _holds_tensors(v)}
    return CheckpointFile(path=path, tensors=tensors, metadata=metadata, skipped=skipped)


@dataclass(frozen=True)
class StateMismatch:
    """How a state dict differs from what a model expects, for errors that say exactly what to fix.

    Key lists keep the order of the model (``missing``) and of the file (``unexpected``), so the first
    examples shown are the earliest layers rather than whatever sorts first.
    """

    missing: list[str] = field(default_factory=list)
    """Model keys the state dict does not provide."""
    unexpected: list[str] = field(default_factory=list)
    """State-dict keys the model has no place for."""
    misshapen: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    """``(key, shape in the state dict, shape the model expects)`` for keys present on both sides."""

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.misshapen)

    def describe(self, noun: str = "keys", preview: Callable[[list[str]], str] | None = None) -> str:
        """One line such as ``missing 4 keys (e.g. a, b, c); wrong shapes: w (3, 2) (model: (2, 2))``.

        ``noun`` and ``preview`` (how a key list is shortened) let a plugin match the wording of its other
        messages; the default preview shows the first three keys as examples.
        """
        preview = preview or _first_keys
        problems = []
        if self.missing:
            problems.append(f"missing {len(self.missing)} {noun} ({preview(self.missing)})")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} unexpected {noun} ({preview(self.unexpected)})")
        if self.misshapen:
            shapes = [f"{key} {found} (model: {wanted})" for key, found, wanted in self.misshapen[:3]]
            more = f"; … {len(self.misshapen) - 3} more" if len(self.misshapen) > 3 else ""
            problems.append(f"wrong shapes: {'; '.join(shapes)}{more}")
        return "; ".join(problems)


def _first_keys(keys: list[str]) -> str:
    return f"e.g. {', '.join(keys[:3])}"


def compare_state(
    tensors: Mapping[str, torch.Tensor],
    expected_shapes: Mapping[str, Sequence[int]],
    *,
    optional: Iterable[str] = (),
) -> StateMismatch:
    """Compare a state dict with the shapes a model expects (e.g. ``{k: v.shape for k, v in model.state_dict()}``).

    ``optional`` names model keys the state dict may leave out (buffers the model rebuilds, heads that
    start fresh); they are still shape-checked when present.
    """
    may_lack = set(optional)
    missing = [key for key in expected_shapes if key not in tensors and key not in may_lack]
    unexpected = [key for key in tensors if key not in expected_shapes]
    misshapen = [
        (key, tuple(tensors[key].shape), tuple(wanted))
        for key, wanted in expected_shapes.items()
        if key in tensors and tuple(tensors[key].shape) != tuple(wanted)
    ]
    return StateMismatch(missing=missing, unexpected=unexpected, misshapen=misshapen)
