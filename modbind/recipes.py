"""Reading recipes: YAML file + ``--set key.path=value`` overrides → a validated :class:`Recipe`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modbind.config import Recipe
from modbind.contracts import describe_validation_error
from modbind.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error.

    Plain YAML keeps the last of two ``train:`` blocks and drops the first without a word; in a recipe
    that silently discards settings.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *defaults' merges may be overridden by explicit keys, as YAML intends
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = key in first_line
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first set on line {first_line[key]}); merge the two into one",
                    key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, what: str = "recipe") -> dict[str, Any]:
    """A YAML mapping from ``path``, or a ConfigError naming the file (and line) when it is not one.

    A key given twice in one mapping (two ``train:`` sections) is an error naming the line and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"malformed YAML in {where}: {problem}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a YAML mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.batch_size=32`` → (["train", "batch_size"], 32); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' must look like key.path=value (e.g. train.batch_size=32)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        value = _number_or_text(value)
    return key.strip().split("."), value


def _number_or_text(text: str) -> Any:
    """YAML 1.1 reads '1e-4' as text; people mean the number (words like 'nan' stay text)."""
    if not any(ch.isdigit() for ch in text):
        return text
    try:
        return float(text)
    except ValueError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set each dotted key in a copy of ``data``; sections are created as needed, numbers index lists
    (``data.train.0.manifest=x.jsonl``)."""
    result = _deep_copy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = result
        for key in keys[:-1]:
            node = _child(node, key, text)
        if isinstance(node, list):
            node[_index(node, keys[-1], text)] = value
        else:
            node[keys[-1]] = value
    return result


def _child(node: Any, key: str, text: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, text)]
    child = node.setdefault(key, {})
    if not isinstance(child, (dict, list)):
        raise ConfigError(f"override '{text}': '{key}' is a value, not a section")
    return child


def _index(items: list[Any], key: str, text: str) -> int:
    if not key.isdigit() or int(key) >= len(items):
        raise ConfigError(f"override '{text}': '{key}' is not an index of a list with {len(items)} entries")
    return int(key)


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def load_recipe(path: Path | None = None, overrides: Iterable[str] = (), *, resolve_plugin: bool = True) -> Recipe:
    """Validate a recipe (the paper's defaults when ``path`` is None) with overrides applied.

    With ``resolve_plugin`` the plugin's options are validated against the plugin's own options model
    and filled with its defaults, so ``recipe show`` prints exactly what a run will use.
    """
    data = read_yaml(Path(path)) if path is not None else {}
    data = apply_overrides(data, overrides)
    where = str(path) if path is not None else "recipe"
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, where, Recipe)) from None
    if resolve_plugin:
        from modbind.plugins import get_registry

        plugin = get_registry().encoder(recipe.plugin.name)
        options = plugin.options(recipe.plugin.options)
        recipe.plugin.options = options.model_dump(mode="json")
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (what ``recipe show`` prints and runs save)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
