"""``modbind plugins``: what is installed, who provides it, and what failed to load."""

from __future__ import annotations

import json

import click

from modbind.plugins import get_registry


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
def plugins(as_json: bool) -> None:
    """List installed encoder plugins and the anchors, tasks, readers and augmentations they add.

    Plugins are found through the 'modbind.plugins' entry-point group: the built-in audio encoders
    and any pip-installed third-party package alike.
    """
    registry = get_registry()
    rows = []
    for kind, bucket in [
        ("encoder", registry.encoders),
        ("anchor", registry.anchors),
        ("eval-task", registry.eval_tasks),
        ("dataset", registry.dataset_readers),
        ("augmentation", registry.augmentations),
    ]:
        for name, item in sorted(bucket.items.items()):
            owner = bucket.owners[name]
            rows.append(
                {
                    "kind": kind,
                    "name": name,
                    "modality": getattr(item, "modality", ""),
                    "package": owner.package,
                    "version": owner.version,
                    "source": owner.module,
                }
            )
    failed = [{"plugin": s.name, "package": s.package, "error": s.error} for s in registry.failed]
    if as_json:
        click.echo(json.dumps({"contributions": rows, "failed": failed}, indent=2))
        return
    headers = ["kind", "name", "modality", "package", "version", "source"]
    widths = {h: max([len(h), *(len(str(r[h])) for r in rows)]) for h in headers}
    click.echo("  ".join(h.upper().ljust(widths[h]) for h in headers).rstrip())
    for row in rows:
        click.echo("  ".join(str(row[h]).ljust(widths[h]) for h in headers).rstrip())
    for fail in failed:
        click.secho(f"failed to load plugin '{fail['plugin']}' ({fail['package']}): {fail['error']}", fg="red", err=True)
