"""``modbind data``: datasets in their original layouts in, clean manifests and shards out."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import click

from modbind.atomic import write_json_atomic
from modbind.cli.options import allow_absolute_option
from modbind.cli.recipe import set_option
from modbind.errors import DataError


@click.group()
def data() -> None:
    """Prepare, translate, de-duplicate, filter and pack training/evaluation data.

    \b
      modbind data readers                                   # datasets it can read
      modbind data prepare audiocaps --root AudioCaps --split test --out AudioCaps/test.jsonl
      modbind data add-translations AudioCaps/test.jsonl pt ac_test_pt.csv
      modbind data overlap train.jsonl AudioCaps/test.jsonl --out train.clean.jsonl
      modbind data filter train.jsonl --drop 0.2 --scorer runs/beats_basic/export --out train.f02.jsonl
      modbind data pack train.jsonl --out shards/ --recipe beats_basic
    """


def _manifest_root(manifest: Path, root: Path | None) -> Path:
    return root if root is not None else manifest.parent


@data.command("readers")
def readers_command() -> None:
    """List the installed dataset readers and their splits."""
    from modbind.plugins import get_registry

    registry = get_registry()
    for reader in sorted(registry.dataset_readers, key=lambda r: r.name):
        owner = registry.dataset_readers.owners[reader.name]
        click.echo(f"{reader.name:14s} splits: {', '.join(reader.splits) or '-'}  [{owner.package}]")
        if reader.description:
            click.echo(f"{'':14s} {reader.description}")


@data.command("prepare")
@click.argument("dataset")
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The dataset's folder in its original layout.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="Manifest to write (JSONL).")
@click.option("--split", default=None, help="Split to read (default: all the dataset has).")
@click.option("--media-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where the audio (and frames) live, when not under --root.")
@click.option("--probe", is_flag=True, help="Record each clip's duration and sample rate in the manifest.")
@click.option("--decode", is_flag=True, help="Fully decode every file (slow) instead of checking its header.")
@click.option("--blacklist", "blacklists", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="WavCaps-style blacklist JSON; matching clips are left out (repeatable).")
@click.option("--workers", default=4, show_default=True, help="Threads checking files.")
@allow_absolute_option(help="Write absolute paths for media outside the manifest's folder (refused by default, "
                            "as readers of the manifest refuse them unless allowed too).")
@click.option("--progress/--no-progress", default=True)
def prepare_command(dataset: str, root: Path, out: Path, split: str | None, media_root: Path | None, probe: bool,
                    decode: bool, blacklists: tuple[Path, ...], workers: int, allow_absolute_paths: bool,
                    progress: bool) -> None:
    """Read DATASET's original metadata under --root and write a checked manifest to --out.

    Missing or undecodable files are left out and listed with counts in a report beside the manifest:
    --out train.jsonl writes train.report.json. The manifest's paths are relative to its own folder: write it
    inside the dataset's media folder (or allow absolute paths).
    """
    from modbind.data.overlap import load_blacklists
    from modbind.data.prepare import prepare, report_path
    from modbind.plugins import get_registry

    reader = get_registry().dataset_readers.get(dataset)
    kwargs = {"media_root": media_root} if media_root is not None else {}
    entries = reader.read(root, split, **kwargs)
    report = prepare(entries, dataset=dataset, root=media_root if media_root is not None else root, out=out,
                     split=split, probe=probe, decode=decode,
                     expect_images=bool(getattr(reader, "pairs_images", False)),
                     blacklist=load_blacklists(blacklists) if blacklists else None, workers=workers,
                     progress=progress, allow_absolute_paths=allow_absolute_paths)
    click.echo(report.summary())
    if report.problems:
        click.echo(f"details: {report_path(out)}")


@data.command("add-translations")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("language")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the merged manifest (default: replace MANIFEST).")
def add_translations_command(manifest: Path, language: str, file: Path, out: Path | None) -> None:
    """Merge translated captions or class names (CSV/JSONL keyed by caption_id, id or label) into MANIFEST."""
    from modbind.data.manifest import read_manifest, write_manifest
    from modbind.data.translations import add_translations

    entries, report = add_translations(read_manifest(manifest), language, file)
    target = out or manifest
    write_manifest(entries, target)
    report_file = target.with_name(f"{target.stem}.translations.{language}.json")
    write_json_atomic(report_file, report.to_json())
    click.echo(report.summary())
    if report.unmatched_keys or report.untranslated:
        click.echo(f"details: {report_file}")


@data.command("overlap")
@click.argument("train", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("evaluation", nargs=-1, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--blacklist", "blacklists", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="WavCaps-style blacklist JSON to apply as well (repeatable).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write TRAIN without the overlapping/blacklisted clips here.")
@click.option("--report", "report_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the overlapping pairs as JSON here.")
def overlap_command(train: Path, evaluation: tuple[Path, ...], blacklists: tuple[Path, ...], out: Path | None,
                    report_file: Path | None) -> None:
    """Report clips of TRAIN that are also in EVALUATION manifests (by id, any file, YouTube/Freesound id)."""
    from modbind.data.manifest import read_manifest, write_manifest
    from modbind.data.overlap import OverlapReport, find_overlap, load_blacklists

    if not evaluation and not blacklists:
        raise DataError("give at least one evaluation manifest or --blacklist")
    train_entries = read_manifest(train)
    combined = OverlapReport()
    for eval_manifest in evaluation:
        report = find_overlap(train_entries, train.parent, read_manifest(eval_manifest), eval_manifest.parent)
        for kind, pairs in report.by_kind.items():
            combined.by_kind.setdefault(kind, []).extend(pairs)
        counts = ", ".join(f"{n} by {k}" for k, n in report.counts().items()) or "none"
        click.echo(f"{eval_manifest}: {len(report.train_ids)} training clips overlap ({counts})")
    removed = set(combined.train_ids)
    if blacklists:
        blacklist = load_blacklists(blacklists)
        hits = {e.id for e in train_entries if blacklist.reason(e) is not None}
        click.echo(f"blacklists: {len(hits)} training clips listed")
        removed |= hits
    if report_file is not None:
        write_json_atomic(report_file, {**combined.to_json(), "removed": sorted(removed)})
    if out is not None:
        kept = [e for e in train_entries if e.id not in removed]
        write_manifest(kept, out)
        click.echo(f"wrote {len(kept)} of {len(train_entries)} training entries to {out}")


@data.command("filter")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--drop", type=float, required=True, help="Fraction of the lowest-scoring pairs to remove, e.g. 0.2.")
@click.option("--scorer", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="An exported modbind model folder (modbind.load).")
@click.option("--anchor", "anchor_model", default=None,
              help="caption-caption mode without an exported model: the anchor (open_clip name, local-dir:...).")
@click.option("--pretrained", default=None, help="Pretrained tag or weights file for --anchor.")
@click.option("--mode", type=click.Choice(["audio-caption", "caption-caption"]), default="audio-caption",
              show_default=True, help="Score clip vs caption, or caption vs the clip's other texts (text tower only).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder the manifest's paths are relative to (default: its folder).")
@click.option("--language", default="en", show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--restart", is_flag=True, help="Ignore scores saved by an earlier, interrupted run.")
@allow_absolute_option()
@click.option("--progress/--no-progress", default=True)
def filter_command(manifest: Path, drop: float, scorer: Path | None, anchor_model: str | None, pretrained: str | None,
                   mode: str, out: Path, root: Path | None, language: str, batch_size: int, restart: bool,
                   allow_absolute_paths: bool, progress: bool) -> None:
    """Write MANIFEST without its lowest-scoring --drop fraction of (clip, caption) pairs, plus a histogram."""
    import modbind
    from modbind.data.filter import (
        AudioCaptionScorer,
        CaptionConsistencyScorer,
        keep_count,
        plot_histogram,
        score_manifest,
        select_pairs,
    )
    from modbind.data.manifest import read_manifest, write_manifest

    keep_count(0, drop)  # validates --drop before loading anything
    entries = read_manifest(manifest)
    pair_scorer: AudioCaptionScorer | CaptionConsistencyScorer
    if scorer is not None:
        model = modbind.load(scorer)
        card_hash = hashlib.sha1(json.dumps(model.card, sort_keys=True, default=str).encode()).hexdigest()[:12]
        identity = f"{mode}:{scorer.resolve()}:{card_hash}"
        pair_scorer = (AudioCaptionScorer(model, _manifest_root(manifest, root), identity, batch_size,
                                          allow_absolute_paths=allow_absolute_paths)
                       if mode == "audio-caption" else CaptionConsistencyScorer(model.encode_text, identity))
    elif anchor_model is not None and mode == "caption-caption":
        from modbind.anchor import load_anchor
        from modbind.config import AnchorConfig
        from modbind.plugins import get_registry

        config = AnchorConfig(model=anchor_model, pretrained=pretrained)
        anchor = load_anchor(config, get_registry().anchor_provider(config.model))
        pair_scorer = CaptionConsistencyScorer(anchor.encode_text, f"{mode}:{anchor.identity}")
    else:
        raise DataError("give --scorer MODEL_DIR (an exported model), or --mode caption-caption with --anchor MODEL")
    scores_file = out.with_name(f"{out.stem}.scores.jsonl")
    if restart and scores_file.exists():
        scores_file.unlink()
    scores = score_manifest(entries, pair_scorer, scores_file, language=language, batch_size=batch_size,
                            progress=progress)
    result = select_pairs(entries, scores, drop, language)
    write_manifest(result.entries, out)
    histogram = out.with_name(f"{out.stem}.scores.png")
    plot_histogram(result.scores, result.threshold, drop, histogram)
    click.echo(result.summary())
    click.echo(f"wrote {out} and {histogram}")


@data.command("pack")
@click.argument("manifest", type=click.Path(path_type=Path), metavar="MANIFEST|TARS")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder for the shards.")
@click.option("--recipe", "recipe_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Recipe (file or shipped name) whose plugin and plugin.options (e.g. sample_rate) decode the "
                   "items, as training will.")
@click.option("--plugin", "plugin_name", metavar="NAME", help="Encoder plugin (overrides the recipe's plugin.name).")
@set_option
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder the manifest's paths are relative to (default: its folder).")
@click.option("--webdataset", "webdataset", is_flag=True,
              help="Read LAION-CLAP-style webdataset tars (<key>.flac + <key>.json) instead of a manifest: "
                   "TARS is a .tar, a folder of them, a glob or a brace range like 'train/name{0..9}.tar'.")
@click.option("--language", default="en", show_default=True,
              help="With --webdataset: the language of the tars' captions ('text') and tags ('tag').")
@click.option("--clips-per-shard", default=1000, show_default=True, help="Items per shard file.")
@click.option("--max-seconds", type=float, default=None, help="Keep only the first N seconds of longer clips.")
@click.option("--workers", default=1, show_default=True, help="Processes decoding items.")
@allow_absolute_option()
@click.option("--progress/--no-progress", default=True)
def pack_command(manifest: Path, out: Path, recipe_file: Path | None, plugin_name: str | None,
                 overrides: tuple[str, ...], root: Path | None, webdataset: bool, language: str,
                 clips_per_shard: int, max_seconds: float | None, workers: int, allow_absolute_paths: bool,
                 progress: bool) -> None:
    """Decode MANIFEST's items once into tar shards the trainer streams (audio: int16 PCM at the recipe's rate).

    The plugin and its options come from the training recipe, so shards hold exactly what training
    decodes; e.g. `modbind data pack train.jsonl --out shards/ --recipe beats_basic`, or
    `--plugin audio_htsat --set plugin.options.sample_rate=48000`. With --webdataset, LAION-CLAP-style
    tars become modbind shards: `modbind data pack 'clotho/train/{0..9}.tar' --webdataset --out shards/
    --recipe htsat_basic` (captions from each sample's json 'text', labels from 'tag').
    Interrupted? Run the same command again: it continues after the last complete shard.
    """
    from modbind.data.manifest import read_manifest
    from modbind.data.shards import is_shard_source, pack_shards
    from modbind.data.webdataset_input import pack_webdataset, require_webdataset
    from modbind.plugins import get_registry
    from modbind.recipes import load_recipe

    if recipe_file is None and plugin_name is None:
        raise DataError("give --recipe FILE (whose plugin decodes the items) or --plugin NAME")
    if webdataset:
        require_webdataset()  # before any other work
        if root is not None:
            raise DataError("--root applies to a manifest's paths; webdataset tars hold their items")
    elif is_shard_source(manifest):
        raise DataError(f"{manifest} names tar files, not a manifest: add --webdataset to read LAION-CLAP-style "
                        "webdataset tars (<key>.flac + <key>.json)")
    settings = ([f"plugin.name={plugin_name}"] if plugin_name else []) + list(overrides)
    recipe = load_recipe(recipe_file, settings)
    plugin = get_registry().encoder(recipe.plugin.name)
    options = plugin.options(recipe.plugin.options)
    pack = dict(clips_per_shard=clips_per_shard, max_seconds=max_seconds, workers=workers, progress=progress)
    if webdataset:
        report = pack_webdataset(manifest, out, plugin, options, language=language, **pack)
    else:
        report = pack_shards(read_manifest(manifest), _manifest_root(manifest, root), out, plugin, options,
                             allow_absolute_paths=allow_absolute_paths, **pack)
    click.echo(report.summary())


def _add_anchor_commands() -> None:
    """``data embed-text`` comes from the anchor's CLI module (caption-cache warm-up)."""
    if importlib.util.find_spec("modbind.cli.anchor_cache") is not None:
        from modbind.cli.anchor_cache import embed_text

        data.add_command(embed_text, name="embed-text")


_add_anchor_commands()
