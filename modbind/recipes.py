"""Reading recipes: YAML file + ``--set key.path=value`` overrides → a validated :class:`Recipe`."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from modbind.config import PluginConfig, Recipe
from modbind.contracts import (
    AnchorProvider,
    Augmentation,
    EncoderOptions,
    EncoderPlugin,
    describe_validation_error,
    validated,
)
from modbind.errors import ConfigError, ModbindError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from modbind.plugins import Registry


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
SHIPPED_PACKAGE = "modbind.shipped_recipes"
"""The repository's ``recipes/`` folder as installed (``pyproject.toml`` maps it); suites in ``suites/``."""


def shipped(what: str = "recipe") -> dict[str, Path]:
    """Name → file of the recipes (``what="recipe"``) or evaluation suites (``"suite"``) installed with modbind."""
    root = importlib.resources.files(SHIPPED_PACKAGE)
    folder = root / "suites" if what == "suite" else root
    files = [entry for entry in folder.iterdir() if entry.name.endswith(".yaml")]
    return {entry.name[: -len(".yaml")]: Path(str(entry)) for entry in sorted(files, key=lambda e: e.name)}


def find_shipped(value: str | Path, what: str = "recipe") -> Path:
    """``value`` as a file: a path that exists wins; else the shipped recipe (or suite) of that name, with or
    without ``.yaml``; else a ConfigError that lists the shipped names and the closest one."""
    path = Path(value)
    if path.exists():
        return path
    files = shipped(what)
    name = path.name[: -len(".yaml")] if path.suffix == ".yaml" and len(path.parts) == 1 else str(value)
    if name in files:
        return files[name]
    raise ConfigError(f"{what} file not found: {value}, and no shipped {what} is called that"
                      f"{did_you_mean(name, files)}; shipped: {', '.join(files) or 'none'} (`modbind recipe list`)")


def describe_shipped(path: Path) -> tuple[str | None, str]:
    """(plugin name or None, first sentence of the file's leading comment) for ``modbind recipe list``."""
    comment: list[str] = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        if not line.startswith("#") or not line.strip("# "):
            break
        comment.append(line.lstrip("#").strip())
    text = " ".join(comment)
    end = text.find(". ")
    sentence = text[: end + 1] if end >= 0 else text
    data = read_yaml(path)
    plugin = None if "tasks" in data else (data.get("plugin") or {}).get("name", PluginConfig().name)
    return plugin, sentence


def read_yaml(path: Path, what: str = "recipe") -> dict[str, Any]:
    """A YAML mapping from ``path`` (UTF-8, BOM allowed), or a ConfigError naming the file (and line) if not.

    A key given twice in one mapping (two ``train:`` sections) is an error naming the line and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
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


def load_recipe(path: Path | str | None = None, overrides: Iterable[str] = ()) -> Recipe:
    """Validate a recipe (the paper's defaults when ``path`` is None) with overrides applied; ``path`` may
    name a shipped recipe (``beats_basic``) instead of a file.

    This checks the schema only; :func:`resolve_recipe` then checks everything that depends on the
    installed plugins, still without building a model.
    """
    data = read_yaml(find_shipped(path, "recipe")) if path is not None else {}
    data = apply_overrides(data, overrides)
    where = str(path) if path is not None else "recipe"
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, where, Recipe)) from None


@dataclass(frozen=True)
class ResolvedRecipe:
    """A recipe with its plugins looked up and validated: what a run needs, checked before heavy work.

    ``recipe.plugin.options`` (and each augmentation's ``params``, where it declares a model) is filled with
    the defaults and ``recipe.anchor.pretrained`` is what the anchor provider will use (None for a
    ``local-dir:`` folder given a tag it ignores), so dumping it shows exactly what a run will use.
    """

    recipe: Recipe
    plugin: EncoderPlugin[Any]
    options: EncoderOptions
    augmentations: tuple[tuple[Augmentation, dict[str, Any]], ...]
    anchor_provider: AnchorProvider


def resolve_recipe(recipe: Recipe, registry: Registry) -> ResolvedRecipe:
    """Look up the recipe's encoder plugin, augmentations and anchor provider in ``registry``.

    Errors name the recipe field: an unknown plugin or augmentation (with the closest name), plugin
    options its own model rejects, augmentation params its ``Params`` model rejects, an augmentation made
    for another modality, an anchor nobody provides, an ``eval.suite`` naming unknown tasks or bad task
    options. Everything here is checked before a model, an anchor or DeepSpeed is touched.
    """
    plugin = registry.encoder(recipe.plugin.name)
    options = plugin.options(recipe.plugin.options)
    augmentations = []
    for index, entry in enumerate(recipe.train.augmentations):
        try:
            augmentation = registry.augmentations.get(entry.name)
        except ModbindError as err:
            raise ConfigError(f"train.augmentations.{index}.name: {err}") from None
        if augmentation.modality not in ("*", plugin.modality):
            raise ConfigError(f"train.augmentations.{index}: '{augmentation.name}' works on {augmentation.modality} "
                              f"features, but plugin '{plugin.name}' encodes {plugin.modality}")
        params = dict(entry.params)
        if augmentation.Params is not None:
            params = validated(augmentation.Params, params, "recipe",
                               prefix=f"train.augmentations.{index}.params.").model_dump()
        augmentations.append((augmentation, params))
    provider = registry.anchor_provider(recipe.anchor.model)
    for key, suite in (("eval.suite", recipe.eval.suite), ("eval.during_training_suite", recipe.eval.periodic_suite)):
        if suite is not None:
            from modbind.suites import check_suite_tasks, load_suite  # suites reads files through this module

            check_suite_tasks(load_suite(suite, recipe.eval.data_root), registry.eval_tasks, f"{key} {suite}")
    filled = recipe.model_copy(deep=True)
    filled.plugin.options = options.model_dump(mode="json")
    for entry, (_, params) in zip(filled.train.augmentations, augmentations):
        entry.params = params
    filled.anchor.pretrained = provider.pretrained_in_use(recipe.anchor.model, recipe.anchor.pretrained)
    return ResolvedRecipe(filled, plugin, options, tuple(augmentations), provider)


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (what ``recipe show`` prints and runs save)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
