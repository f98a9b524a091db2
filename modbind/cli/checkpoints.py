"""``modbind checkpoints [list|download]``: the official checkpoints plugins know by name, and the cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from modbind.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from modbind.pretrained import PretrainedCheckpoint


@click.group(invoke_without_command=True)
@click.pass_context
def checkpoints(ctx: click.Context) -> None:
    """Official checkpoints the installed plugins know by name, and which of them are cached.

    A recipe names one instead of a file (plugin.options.checkpoint: beats-iter3-plus-as2m); the first
    run downloads it into the cache, verifies it (sha256 where published) and reuses it afterwards.
    A path to a local file works as before.

    \b
      modbind checkpoints                               # list them (same as 'list')
      modbind checkpoints list --plugin audio_htsat
      modbind checkpoints download beats-iter3-plus-as2m  # fetch ahead of time, e.g. before going offline

    The cache is $MODBIND_CACHE_DIR/checkpoints, or checkpoints/ in the user cache folder. With
    MODBIND_OFFLINE=1 (or HF_HUB_OFFLINE=1) nothing is downloaded: a missing file is an error that
    names the link and the exact path to save the file at.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command)


@checkpoints.command("list")
@click.option("--plugin", "plugin_name", default=None, help="Only this encoder plugin's checkpoints.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (with links, sha256, provenance).")
def list_command(plugin_name: str | None, as_json: bool) -> None:
    """List the known checkpoints: plugin, name, size, licence, whether cached, and the cached file.

    \b
    CACHED is one of:
      no                              not downloaded yet
      yes (sha256 verified)           its sha256 matched the published one
      yes (hashed on first use)       present; checked when a run first uses it
      yes (size checked)              no sha256 is published; the published size matches
      yes (nothing published to check)  neither sha256 nor size is published
      damaged (size|sha256)           delete it; the next use downloads it again
    """
    from modbind.pretrained import cache_status, cached_path, checkpoints_dir, human_size

    rows = []
    for owner, entry in _entries(plugin_name):
        path = cached_path(entry, owner)
        rows.append({
            "plugin": owner, "name": entry.name, "size_bytes": entry.size_bytes, "size": human_size(entry.size_bytes),
            "license": entry.license, "cached": cache_status(entry, owner), "path": str(path),
            "file": str(path.relative_to(checkpoints_dir())), "sha256": entry.sha256, "urls": list(entry.urls),
            "page": entry.page, "description": entry.description, "implies": dict(entry.options),
            "provenance": entry.provenance,
        })
    if as_json:
        click.echo(json.dumps({"cache": str(checkpoints_dir()), "checkpoints": rows}, indent=2, default=str))
        return
    click.echo(f"checkpoint cache: {checkpoints_dir()}")
    headers = {"plugin": "PLUGIN", "name": "NAME", "size": "SIZE", "license": "LICENCE", "cached": "CACHED",
               "file": "FILE"}
    widths = {key: max([len(title), *(len(str(row[key])) for row in rows)]) for key, title in headers.items()}
    click.echo("  ".join(title.ljust(widths[key]) for key, title in headers.items()).rstrip())
    for row in rows:
        click.echo("  ".join(str(row[key]).ljust(widths[key]) for key in headers).rstrip())


@checkpoints.command("download")
@click.argument("names", nargs=-1, required=True)
@click.option("--plugin", "plugin_name", default=None, help="Look NAMES up in this plugin only.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show download progress bars.")
def download_command(names: tuple[str, ...], plugin_name: str | None, progress: bool) -> None:
    """Download (or verify, when already cached) the checkpoints called NAMES and print their paths."""
    from modbind.pretrained import fetch_checkpoint

    known = list(_entries(plugin_name))
    for name in names:
        matches = [(owner, entry) for owner, entry in known if entry.name == name]
        if not matches:
            hint = did_you_mean(name, [entry.name for _, entry in known])
            raise ConfigError(f"no known checkpoint is called '{name}'{hint}; `modbind checkpoints` lists them")
        if len(matches) > 1:
            owners = ", ".join(owner for owner, _ in matches)
            raise ConfigError(f"'{name}' is known to several plugins ({owners}); choose one with --plugin")
        owner, entry = matches[0]
        click.echo(f"{name}: {fetch_checkpoint(entry, owner=owner, progress=progress)}")


def _entries(plugin_name: str | None) -> Iterator[tuple[str, PretrainedCheckpoint]]:
    """(plugin name, entry) for every known checkpoint, plugins in name order (one plugin with --plugin)."""
    from modbind.plugins import get_registry

    registry = get_registry()
    if plugin_name:
        plugins = [registry.encoder(plugin_name)]
    else:
        plugins = [plugin for _, plugin in sorted(registry.encoders.items.items())]
    for plugin in plugins:
        for entry in plugin.pretrained.values():
            yield plugin.name, entry
