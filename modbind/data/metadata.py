"""Reading original metadata files (CSV, TSV, JSON, YAML) with errors that name the file, the line and the fix.

Dataset readers never call :mod:`csv` or :mod:`json` directly: going through these helpers is what makes a
missing column, a broken JSON file or a non-UTF-8 byte fail with ``file:line: what is wrong; what to do``
instead of a traceback from deep inside a parser.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modbind.errors import DataError


@dataclass(frozen=True)
class Row:
    """One CSV record: its fields by column name and the line it started on (1-based, header included)."""

    path: Path
    line: int
    fields: dict[str, str]

    def __getitem__(self, column: str) -> str:
        return self.fields[column]

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def fail(self, problem: str) -> DataError:
        """A :class:`DataError` pointing at this row."""
        return DataError(f"{self.where()}: {problem}")

    def integer(self, column: str, *, allowed: range | None = None, what: str | None = None) -> int:
        """The column as an int, failing with the row's location when it is not one (or out of range)."""
        raw = self.fields[column].strip()
        try:
            value = int(raw)
        except ValueError:
            try:
                as_float = float(raw)
            except ValueError:
                as_float = float("nan")
            if not as_float.is_integer():
                raise self.fail(f"{what or column} {raw!r} is not a whole number; fix column '{column}'") from None
            value = int(as_float)
        if allowed is not None and value not in allowed:
            raise self.fail(
                f"{what or column} {value} is out of range (expected {allowed.start}-{allowed.stop - 1}); "
                f"fix column '{column}'"
            )
        return value

    def number(self, column: str) -> float:
        raw = self.fields[column].strip()
        try:
            return float(raw)
        except ValueError:
            raise self.fail(f"{column} {raw!r} is not a number; fix column '{column}'") from None


def read_text(path: Path, *, encodings: Sequence[str] = ("utf-8",)) -> str:
    """The file's text; a byte no allowed encoding accepts fails with its line and a hint to re-save as UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"metadata file not found: {path}")
    data = path.read_bytes()
    first_error: UnicodeDecodeError | None = None
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as err:
            first_error = first_error or err
            continue
        return text[1:] if text.startswith("\ufeff") else text
    assert first_error is not None
    line = data[: first_error.start].count(b"\n") + 1
    raise DataError(
        f"{path}:{line}: not UTF-8 text (byte 0x{data[first_error.start]:02x} at offset {first_error.start}); "
        "re-save the file as UTF-8"
    )


def read_csv(
    path: Path,
    required: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    delimiter: str = ",",
    encodings: Sequence[str] = ("utf-8",),
) -> Iterator[Row]:
    """Rows of a delimited file as :class:`Row` objects.

    ``names`` is for header-less files (VGGSound): the columns in order. Otherwise the first line is the
    header and every name in ``required`` must be in it. A row with the wrong number of fields fails with
    its line, because a silently shifted column corrupts labels and folds.
    """
    path = Path(path)
    text = read_text(path, encodings=encodings)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start_line = 1
    try:
        if names is None:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: the file is empty; expected a header with columns {', '.join(required)}")
            columns = [name.strip() for name in header]
            missing = [name for name in required if name not in columns]
            if missing:
                raise DataError(
                    f"{path}:1: missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} "
                    f"(the header has: {', '.join(columns)}); use the dataset's original metadata file"
                )
            start_line = reader.line_num + 1
        else:
            columns = list(names)
        for fields in reader:
            line = start_line
            start_line = reader.line_num + 1
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(columns):
                raise DataError(
                    f"{path}:{line}: {len(fields)} fields where the {'header' if names is None else 'format'} has "
                    f"{len(columns)} ({delimiter.join(columns)}); quote values that contain '{delimiter}'"
                )
            yield Row(path, line, dict(zip(columns, fields)))
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err}); check the quoting on that line") from None


def read_json(path: Path) -> Any:
    """A JSON document; a syntax error fails with its line and column."""
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg} at column {err.colno}); repair or re-download the file") from None


def read_yaml(path: Path) -> Any:
    """A YAML document (safe loader only); a syntax error fails with its line."""
    import yaml

    path = Path(path)
    text = read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise DataError(f"{path}{line}: invalid YAML ({problem}); repair or re-download the file") from None
