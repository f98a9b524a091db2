"""Entry point of the ``modbind`` command: the group, error handling and sub-command wiring."""

from __future__ import annotations

import sys
from typing import Any

import click

from modbind import __version__
from modbind.errors import ModbindError


class ModbindGroup(click.Group):
    """A click group that turns :class:`ModbindError` into one clear line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModbindError as err:
            for line in str(err).splitlines() or [type(err).__name__]:
                click.echo(f"Error: {line}", err=True)
            sys.exit(2)


@click.group(cls=ModbindGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", "-V", prog_name="modbind")
def cli() -> None:
    """Align a new modality (audio, IMU, depth, ...) to a frozen multilingual text-image space.

    \b
    Typical session:
      modbind demo                                  # the whole method on a synthetic world, on CPU
      modbind plugins                               # which encoders are installed
      modbind checkpoints                           # official checkpoints by name, and which are cached
      modbind data prepare audiocaps --root DIR --out DIR/train.jsonl
      modbind align --plugin audio_beats --recipe beats_basic
      modbind eval runs/beats_basic/export --suite paper --data-root data
      modbind embed runs/beats_basic/export clips/ --out embeddings.safetensors
      modbind bundle create runs/bundle runs/audio/export runs/depth/export   # one space, two modalities
    """


def _add_commands() -> None:
    from modbind.cli import align, bundle, checkpoints, data, demo, embed, evaluate, plugins, recipe

    cli.add_command(plugins.plugins)
    cli.add_command(checkpoints.checkpoints)
    cli.add_command(recipe.recipe)
    cli.add_command(align.align)
    cli.add_command(evaluate.eval_command)
    cli.add_command(embed.embed)
    cli.add_command(bundle.bundle)
    cli.add_command(data.data)
    cli.add_command(demo.demo)


_add_commands()

if __name__ == "__main__":  # pragma: no cover
    cli()
