"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ModbindError(Exception):
    """A problem the user can fix: the message names the bad thing and what to do."""


class PluginError(ModbindError):
    """A plugin is unknown, duplicated or failed to import."""


class ConfigError(ModbindError):
    """A recipe or override is invalid."""


class DataError(ModbindError):
    """An input file or manifest is unusable."""


class UnsafePathError(DataError):
    """A path read from a manifest or metadata file points outside its data root (or is absolute)."""


class CheckpointError(ModbindError):
    """A checkpoint is missing, malformed or does not fit the model."""


class NonFiniteError(ModbindError):
    """A loss, gradient or weight became NaN or infinite: training diverged, or a model cannot be exported."""


def exception_reason(err: BaseException) -> str:
    """The first line of ``err``'s message, or its type name when the message is empty.

    For "... (reason)" messages built from library exceptions, some of which carry no text (``EOFError()``).
    """
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The nearest valid spelling of ``word``, used to suggest a fix in error messages."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' when a close match exists, else ''."""
    match = closest(word, choices)
    return f" (did you mean '{match}'?)" if match else ""
