"""``modbind recipe show|validate``: see exactly what a run will use before spending compute."""

from __future__ import annotations

from pathlib import Path

import click

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe value, e.g. --set train.batch_size=32 (repeatable; value read as YAML).",
)


@click.group()
def recipe() -> None:
    """Inspect and check recipe YAML files."""


@recipe.command()
@click.argument("file", type=click.Path(path_type=Path), required=False)
@set_option
def show(file: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the fully resolved recipe: FILE (or the paper's defaults) with overrides and plugin defaults."""
    from modbind.plugins import get_registry
    from modbind.recipes import dump_recipe, load_recipe, resolve_recipe

    click.echo(dump_recipe(resolve_recipe(load_recipe(file, overrides), get_registry()).recipe), nl=False)


@recipe.command()
@click.argument("file", type=click.Path(path_type=Path))
@set_option
def validate(file: Path, overrides: tuple[str, ...]) -> None:
    """Check FILE without building anything: the schema, the plugin's options, augmentation names and
    params, the anchor provider, and the eval suite's tasks and task options; exit 0 when valid."""
    from modbind.plugins import get_registry
    from modbind.recipes import load_recipe, resolve_recipe

    recipe = resolve_recipe(load_recipe(file, overrides), get_registry()).recipe
    click.echo(f"{file}: valid (plugin {recipe.plugin.name}, batch {recipe.train.batch_size}, "
               f"{recipe.train.finetune} fine-tune)")
