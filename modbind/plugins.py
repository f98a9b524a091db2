"""Plugin discovery: entry points in, one registry of contributions out, with errors a user can act on.

Built-in audio plugins are found through the same ``modbind.plugins`` entry-point group as third-party
packages; the core's own contributions (anchors, evaluation tasks, dataset readers, augmentations) are
plugin modules too (``CORE_PLUGINS``), registered exactly like external ones. Set ``MODBIND_DISABLE_PLUGIN_AUTOLOAD=1`` to load
only the core (useful when a broken plugin gets in the way).
"""

from __future__ import annotations

import functools
import importlib
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Generic, TypeVar

import pluggy

from modbind import hookspecs
from modbind.errors import ConfigError, PluginError, did_you_mean

ENTRY_POINT_GROUP = "modbind.plugins"
CORE_PLUGINS = (
    "modbind.anchor.plugin",
    "modbind.audio.plugin",
    "modbind.data.plugin",
    "modbind.eval.plugin",
)
T = TypeVar("T")


@dataclass
class PluginSource:
    """Where a plugin module came from, for ``modbind plugins`` and error messages."""

    name: str
    module: str
    package: str
    version: str
    error: str | None = None


@dataclass
class Contributions(Generic[T]):
    """One kind of contribution (encoders, anchors, ...) keyed by name, remembering who contributed it."""

    kind: str
    items: dict[str, T] = field(default_factory=dict)
    owners: dict[str, PluginSource] = field(default_factory=dict)

    def add(self, item: T, owner: PluginSource) -> None:
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin '{owner.name}' registered a {self.kind} without a name: {item!r}")
        if name in self.items:
            first = self.owners[name]
            raise PluginError(
                f"two plugins claim the {self.kind} name '{name}': '{first.name}' ({first.package}) and "
                f"'{owner.name}' ({owner.package}); uninstall one of them"
            )
        self.items[name] = item
        self.owners[name] = owner

    def get(self, name: str) -> T:
        if name not in self.items:
            known = ", ".join(sorted(self.items)) or "none"
            raise PluginError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.items)}; installed: {known}"
            )
        return self.items[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items.values())

    def __contains__(self, name: object) -> bool:
        return name in self.items


class Registry:
    """Everything the installed plugins contribute, collected once per process."""

    def __init__(self, manager: pluggy.PluginManager, sources: list[PluginSource]):
        self.manager = manager
        self.sources = sources
        self.encoders: Contributions[Any] = Contributions("encoder plugin")
        self.augmentations: Contributions[Any] = Contributions("augmentation")
        self.dataset_readers: Contributions[Any] = Contributions("dataset reader")
        self.eval_tasks: Contributions[Any] = Contributions("evaluation task")
        self.anchors: Contributions[Any] = Contributions("anchor provider")
        for source in sources:
            if source.error is None:
                self._collect(source)

    def _collect(self, source: PluginSource) -> None:
        """Call each hook through pluggy for this one plugin, so every contribution records its owner."""
        plugin = self.manager.get_plugin(source.name)
        others = [p for p in self.manager.get_plugins() if p is not plugin]
        calls = {
            "register_encoders": self.encoders,
            "register_augmentations": self.augmentations,
            "register_dataset_readers": self.dataset_readers,
            "register_eval_tasks": self.eval_tasks,
            "register_anchors": self.anchors,
        }
        for hook_name, bucket in calls.items():
            hook = self.manager.subset_hook_caller(hook_name, remove_plugins=others)
            hook(register=lambda item, b=bucket: b.add(item, source))

    @property
    def failed(self) -> list[PluginSource]:
        return [s for s in self.sources if s.error is not None]

    def encoder(self, name: str) -> Any:
        """The encoder plugin called ``name``; the error lists installed ones and broken plugins."""
        try:
            return self.encoders.get(name)
        except PluginError as err:
            broken = [s for s in self.failed if s.name == name]
            if broken:
                raise PluginError(
                    f"plugin '{name}' is installed ({broken[0].package}) but failed to import: {broken[0].error}"
                ) from None
            raise err from None

    def anchor_provider(self, model: str) -> Any:
        """The first provider that handles the recipe's ``anchor.model``; the error suggests known names."""
        for provider in self.anchors:
            if provider.handles(model):
                return provider
        known = ", ".join(p.name for p in self.anchors) or "none"
        names = [name for provider in self.anchors for name in provider.known_models()]
        raise ConfigError(f"anchor.model: no anchor provider understands '{model}'{did_you_mean(model, names)}; "
                          f"installed providers: {known}")


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _distribution_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "unknown"
    return dist.metadata["Name"], dist.version


def build_registry(autoload: bool | None = None) -> Registry:
    """Discover plugins and collect their contributions. A plugin that fails to import is reported, not fatal."""
    import modbind

    manager = pluggy.PluginManager("modbind")
    manager.add_hookspecs(hookspecs)
    sources: list[PluginSource] = []
    for module in CORE_PLUGINS:
        source = PluginSource(module, module, "modbind", modbind.__version__)
        _register(manager, source, lambda m=module: importlib.import_module(m))
        sources.append(source)
    if autoload is None:
        autoload = os.environ.get("MODBIND_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
    seen: set[str] = set()
    for ep in _entry_points() if autoload else []:
        package, version = _distribution_of(ep)
        if ep.name in seen:
            continue  # the same distribution visible twice on sys.path
        seen.add(ep.name)
        source = PluginSource(ep.name, ep.value, package, version)
        _register(manager, source, ep.load)
        sources.append(source)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as err:
        raise PluginError(f"plugin '{manager.get_name(err.plugin)}' does not fit modbind's hooks: {err}") from None
    return Registry(manager, sources)


def _register(manager: pluggy.PluginManager, source: PluginSource, load: Callable[[], Any]) -> None:
    """Import and register one plugin module; on failure record the error on ``source`` and go on."""
    try:
        manager.register(load(), name=source.name)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the others down
        last = traceback.extract_tb(exc.__traceback__)[-1]
        source.error = f"{type(exc).__name__}: {exc} (at {last.filename}:{last.lineno})"


@functools.lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry (built on first use)."""
    return build_registry()


def reset_registry() -> None:
    """Forget the cached registry (tests install and remove plugins)."""
    get_registry.cache_clear()
