"""``modbind align``: train a plugin's encoder + head against the frozen anchor (DeepSpeed underneath)."""

from __future__ import annotations

from pathlib import Path

import click

from modbind.cli.recipe import set_option


@click.command()
@click.option("--plugin", "plugin_name", metavar="NAME",
              help="Encoder plugin to align (see `modbind plugins`); overrides the recipe's plugin.name.")
@click.option("--recipe", "recipe_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Recipe YAML or a shipped recipe's name, e.g. beats_basic (`modbind recipe list`); "
                   "default: the paper's basic recipe.")
@set_option
@click.option("--resume", is_flag=True, help="Continue the run in the output folder from its last checkpoint.")
@click.option("--extend", is_flag=True,
              help="With --resume: train the run further; the recipe may raise train.epochs / train.max_steps "
                   "(e.g. --set train.max_steps=20000). The added steps run at train.optimizer.min_lr.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Output folder (overrides output.dir).")
@click.option("--threads", type=click.IntRange(min=1), metavar="N",
              help="Intra-op CPU threads per process (train.threads); default: on a CPU, the cores split over "
                   "the ranks on this machine minus the DataLoader workers.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar (logs still go to metrics.jsonl).")
# The `deepspeed` launcher appends --local_rank=N to every rank's command line; the rank comes from the
# LOCAL_RANK environment variable both launchers set, so the flag is accepted and ignored.
@click.option("--local_rank", "--local-rank", "_local_rank", type=int, hidden=True, expose_value=False)
def align(plugin_name: str | None, recipe_file: Path | None, overrides: tuple[str, ...], resume: bool, extend: bool,
          out_dir: Path | None, threads: int | None, no_progress: bool) -> None:
    """Align a modality encoder to the frozen text-image anchor with symmetric InfoNCE.

    \b
    One process (CPU or one GPU):
      modbind align --plugin audio_beats --recipe beats_basic --out runs/beats
    Train a finished run further (the added steps run at min_lr):
      modbind align --recipe beats_basic --out runs/beats --resume --extend --set train.epochs=8
    Several GPUs / nodes (see docs/recipes.md; the rank comes from LOCAL_RANK):
      deepspeed --num_gpus 8 $(which modbind) align --recipe beats_expanded
      torchrun --nproc_per_node 8 $(which modbind) align --recipe beats_expanded
    The output folder holds the resolved recipe, metrics.jsonl, checkpoints/ and export/ (load it
    with modbind.load(path)); with eval.suite set, also eval/ (the report of the exported model).
    """
    from modbind.plugins import get_registry
    from modbind.recipes import load_recipe, resolve_recipe
    from modbind.workflow import align_and_evaluate

    settings = ([f"plugin.name={plugin_name}"] if plugin_name else []) + list(overrides)
    settings += [f"train.threads={threads}"] if threads is not None else []
    recipe = load_recipe(recipe_file, settings)
    if out_dir is not None:
        recipe.output.dir = out_dir
    registry = get_registry()
    result = align_and_evaluate(resolve_recipe(recipe, registry), registry, resume=resume, extend=extend,
                                progress=not no_progress)
    click.echo(f"trained {result.steps} steps (final loss {result.final_loss:.4f}, {result.skipped} items skipped); "
               f"model exported to {result.export_dir}")
