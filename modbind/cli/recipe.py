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


@recipe.command("list")
def list_command() -> None:
    """The recipes and evaluation suites shipped with modbind: name, plugin and what each is for.

    Any command that takes a recipe or suite file also takes these names, e.g. `--recipe beats_basic`.
    """
    from modbind.recipes import describe_shipped, shipped

    for what in ("recipe", "suite"):
        files = shipped(what)
        click.echo(f"{what}s:")
        width = max((len(name) for name in files), default=0)
        for name, path in files.items():
            plugin, description = describe_shipped(path)
            click.echo(f"  {name:{width}s}  {plugin or '-':12s}  {description}")


@recipe.command()
@click.argument("file", type=click.Path(path_type=Path), required=False)
@set_option
def show(file: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the fully resolved recipe: FILE or a shipped recipe's name (default: the paper's defaults) with
    overrides and plugin defaults."""
    from modbind.plugins import get_registry
    from modbind.recipes import dump_recipe, load_recipe, resolve_recipe

    click.echo(dump_recipe(resolve_recipe(load_recipe(file, overrides), get_registry()).recipe), nl=False)


@recipe.command()
@click.argument("file", type=click.Path(path_type=Path))
@set_option
def validate(file: Path, overrides: tuple[str, ...]) -> None:
    """Check FILE (or a shipped recipe's name) without building anything: the schema, the plugin's options, augmentation names and
    params, the anchor provider, and the eval suite's tasks and task options; exit 0 when valid."""
    from modbind.plugins import get_registry
    from modbind.recipes import load_recipe, resolve_recipe

    recipe = resolve_recipe(load_recipe(file, overrides), get_registry()).recipe
    click.echo(f"{file}: valid (plugin {recipe.plugin.name}, batch {recipe.train.batch_size}, "
               f"{recipe.train.finetune} fine-tune)")
