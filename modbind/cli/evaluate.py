"""``modbind eval``: run evaluation tasks on a model and write one report (JSON, Markdown, plots)."""

from __future__ import annotations

from pathlib import Path

import click

from modbind.cli.options import allow_absolute_option
from modbind.eval.metrics import DEFAULT_TIE_POLICY, TIE_POLICIES


def split_languages(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def model_options(func):  # type: ignore[no-untyped-def]
    """Options shared with ``modbind embed``: how to get the model and where to cache frozen embeddings."""
    decorators = [
        click.option("--untrained", is_flag=True, help="Use freshly initialised encoders (chance-level control): "
                     "MODEL's plugins, options and anchor when MODEL is given, else --plugin's."),
        click.option("--plugin", "plugin_name", metavar="NAME", help="Encoder plugin for --untrained."),
        click.option("--plugin-option", "plugin_options", multiple=True, metavar="KEY=VALUE",
                     help="Plugin option for --untrained (repeatable), e.g. size=tiny."),
        click.option("--anchor", metavar="MODEL", help="Anchor for --untrained or anchor-only runs "
                     "(open_clip name, hf-hub:..., local-dir:PATH)."),
        click.option("--anchor-pretrained", metavar="TAG", help="open_clip pretrained tag for --anchor."),
        click.option("--seed", type=int, default=0, show_default=True, help="Initialisation seed for --untrained."),
        click.option("--modality", metavar="NAME", help="Which modality of a bundle MODEL the items are (default: "
                     "the only one; embed: by file extension)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True),
        click.option("--device", default="cpu", show_default=True),
        click.option("--cache-dir", type=click.Path(path_type=Path), help="Cache of frozen-tower embeddings "
                     "(default: $MODBIND_CACHE_DIR/eval or the user cache folder)."),
        click.option("--no-cache", is_flag=True, help="Keep frozen-tower embeddings in memory only."),
        click.option("--no-progress", is_flag=True, help="Hide progress bars."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def build_embedder(model_path, untrained, plugin_name, plugin_options, anchor, anchor_pretrained, seed,  # type: ignore[no-untyped-def]
                   modality, batch_size, device, cache_dir, no_cache, no_progress):
    """The embedder and the report's model record, from the shared options."""
    from modbind.eval.embedder import Embedder, default_cache_dir
    from modbind.eval.models import resolve_model
    from modbind.plugins import get_registry
    from modbind.recipes import apply_overrides

    model, loaded_anchor, info = resolve_model(
        model_path, get_registry(), untrained=untrained, plugin=plugin_name,
        plugin_options=apply_overrides({}, plugin_options), anchor=anchor, anchor_pretrained=anchor_pretrained,
        device=device, seed=seed,
    )
    cache = None if no_cache else (cache_dir or default_cache_dir())
    embedder = Embedder(model, anchor=loaded_anchor, batch_size=batch_size, progress=not no_progress, cache_dir=cache)
    if modality is not None:
        embedder.model_for(modality)  # an unknown modality fails before any work, naming the model's
    return embedder, info


@click.command("eval")
@click.argument("model", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--task", "task_name", metavar="NAME", help="retrieval, zeroshot, multilingual, emergent, "
              "anchor_baseline, or a plugin's task (`modbind plugins`).")
@click.option("--data", type=click.Path(path_type=Path), help="Manifest (JSONL) to evaluate on.")
@click.option("--root", type=click.Path(path_type=Path), help="Folder item paths are relative to (default: the manifest's).")
@click.option("--languages", help="Comma-separated language codes, e.g. en,pt,de (default: the task's).")
@click.option("--option", "-o", "task_options", multiple=True, metavar="KEY=VALUE",
              help="Task option (repeatable), e.g. -o match=labels -o template='This is a sound of {}.'")
@click.option("--suite", type=click.Path(path_type=Path), help="Suite YAML (or a shipped suite's name, e.g. paper) "
              "running several tasks into one report.")
@click.option("--data-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="What ${DATA_ROOT} stands for in the suite's paths (default: $MODBIND_DATA_ROOT, else ./data).")
@click.option("--label", help="Name of the evaluation in the report.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("eval-report"), show_default=True)
@click.option("--tie-policy", type=click.Choice(TIE_POLICIES), default=None,
              help=f"How equal scores are ordered (default: {DEFAULT_TIE_POLICY}).")
@allow_absolute_option()
@model_options
def eval_command(model: Path | None, task_name: str | None, data: Path | None, root: Path | None, languages: str | None,
                 task_options: tuple[str, ...], suite: Path | None, data_root: Path | None, label: str | None, out: Path,
                 tie_policy: str | None, allow_absolute_paths: bool, untrained: bool, plugin_name: str | None,
                 plugin_options: tuple[str, ...], anchor: str | None, anchor_pretrained: str | None, seed: int,
                 modality: str | None, batch_size: int, device: str, cache_dir: Path | None, no_cache: bool,
                 no_progress: bool) -> None:
    """Evaluate MODEL (an exported folder or a bundle) and write report.json, report.md and plots/ to --out.

    \b
    Examples:
      modbind eval runs/x/export --task retrieval --data audiocaps_test.jsonl
      modbind eval runs/x/export --task multilingual --data test.jsonl --languages en,pt,de
      modbind eval runs/x/export --task zeroshot --data esc50.jsonl -o template='This is a sound of {}.'
      modbind eval runs/x/export --task emergent --data vggsound_test.jsonl -o match=labels
      modbind eval my_bundle --modality audio --task emergent --data test.jsonl -o pair=depth
      modbind eval my_bundle --untrained --task emergent --data test.jsonl -o pair=depth
      modbind eval --untrained --plugin audio_beats --plugin-option size=tiny --task retrieval --data test.jsonl
      modbind eval runs/x/export --suite paper --data-root /data/manifests --out reports/x
    """
    from modbind.errors import ConfigError
    from modbind.eval.report import console_table
    from modbind.eval.suite import evaluate
    from modbind.suites import Suite, SuiteTask, check_suite_tasks, load_suite
    from modbind.plugins import get_registry
    from modbind.recipes import apply_overrides

    if suite is not None:
        if task_name or data or task_options:
            raise ConfigError("--suite lists its own tasks and data; drop --task/--data/--option")
        plan = load_suite(suite, data_root)
        for spec in plan.tasks:
            spec.allow_absolute_paths = spec.allow_absolute_paths or allow_absolute_paths
    else:
        if not task_name or data is None:
            raise ConfigError("give --task NAME and --data MANIFEST, or --suite FILE")
        if data_root is not None:
            raise ConfigError("--data-root is what ${DATA_ROOT} means in a --suite; with --task, --data names the file")
        plan = Suite(tasks=[SuiteTask(task=task_name, data=data, root=root, name=label,
                                      options=apply_overrides({}, task_options),
                                      allow_absolute_paths=allow_absolute_paths)])
    tasks = get_registry().eval_tasks
    check_suite_tasks(plan, tasks, suite or "--task")
    embedder, info = build_embedder(model, untrained, plugin_name, plugin_options, anchor, anchor_pretrained,
                                    seed, modality, batch_size, device, cache_dir, no_cache, no_progress)
    results, written = evaluate(embedder, plan, out, tasks, model_info=info, tie_policy=tie_policy,
                                languages=split_languages(languages), modality=modality,
                                settings={"device": device, "suite": str(suite) if suite else None})
    for result in results:
        click.echo(f"[{result.label}]")
        for line in result.messages:
            click.echo(f"  {line}")
        for line in console_table(result):
            click.echo(f"  {line}")
    click.echo(f"report: {written['markdown']} (numbers: {written['json']}, plots: {written['plots']})")
