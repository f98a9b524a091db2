"""``modbind embed``: embed a collection (audio/other items, images, texts) into the aligned space."""

from __future__ import annotations

from pathlib import Path

import click

from modbind.cli.evaluate import build_embedder, model_options
from modbind.cli.options import allow_absolute_option


@click.command()
@click.argument("arguments", nargs=-1, type=click.Path(path_type=Path), metavar="[MODEL] INPUTS...")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="x.safetensors (ids in the metadata) or x.npy (ids in x.ids.json).")
@click.option("--kind", type=click.Choice(["auto", "item", "image", "text"]), default="auto", show_default=True,
              help="What the inputs are; auto: by file extension (a manifest gives its items).")
@click.option("--text", "texts", multiple=True, help="A text to embed (repeatable).")
@allow_absolute_option()
@model_options
def embed(arguments: tuple[Path, ...], out: Path, kind: str, texts: tuple[str, ...], allow_absolute_paths: bool,
          untrained: bool,
          plugin_name: str | None, plugin_options: tuple[str, ...], anchor: str | None, anchor_pretrained: str | None,
          seed: int, modality: str | None, batch_size: int, device: str, cache_dir: Path | None, no_cache: bool,
          no_progress: bool) -> None:
    """Embed INPUTS (files, folders or a manifest .jsonl) with MODEL; L2-normalised, one id per row.

    MODEL (an exported folder) comes first; with --untrained or --anchor there is no MODEL and every
    argument is an input.
    MODEL may be a bundle: each file goes to the modality its extension belongs to (--modality to choose).

    \b
    Examples:
      modbind embed runs/x/export clips/ --out clips.safetensors
      modbind embed my_bundle clips/ depth_maps/ --out both.safetensors
      modbind embed runs/x/export test.jsonl --kind text --out captions.npy
      modbind embed runs/x/export photo.png --text "a dog barks" --out mixed.safetensors
      modbind embed --untrained --plugin audio_beats clip.wav --out control.safetensors
    """
    from modbind.errors import ConfigError
    from modbind.eval.collection import collect, embed_collection, save_embeddings

    if out.suffix not in (".safetensors", ".npy"):
        raise ConfigError(f"--out must end in .safetensors or .npy, got '{out.name}'")
    model, inputs = split_model_argument(arguments, untrained or anchor is not None)
    if not inputs and not texts:
        raise ConfigError("nothing to embed: give files, folders, a manifest or --text")
    embedder, info = build_embedder(model, untrained, plugin_name, plugin_options, anchor, anchor_pretrained,
                                    seed, modality, batch_size, device, cache_dir, no_cache, no_progress)
    extensions = {m: tuple(member.plugin.file_extensions) for m, member in embedder.models.items()}
    collection = collect(inputs, texts, extensions, kind=kind, modality=modality,
                         allow_absolute_paths=allow_absolute_paths)
    embeddings, embedded, skipped = embed_collection(embedder, collection)
    meta = {"model": info.get("path"), "anchor_identity": info.get("card", {}).get("anchor_identity"),
            "dim": int(embeddings.shape[1]), "normalised": "l2"}
    written = save_embeddings(out, embeddings, embedded, skipped, meta)
    for failure in skipped:
        click.echo(f"skipped {failure.key}: {failure.reason}", err=True)
    click.echo(f"embedded {len(embedded)} inputs ({embeddings.shape[1]} dims), skipped {len(skipped)} -> "
               + ", ".join(str(p) for p in written))


def split_model_argument(arguments: tuple[Path, ...], model_from_options: bool) -> tuple[Path | None, tuple[Path, ...]]:
    """(MODEL, INPUTS): the first argument is the exported model unless --untrained/--anchor builds one."""
    from modbind.errors import ConfigError

    if model_from_options or not arguments:
        return None, arguments
    model, *inputs = arguments
    if not model.is_dir():
        raise ConfigError(f"MODEL '{model}' is not an exported model folder; give one first, or pass --untrained "
                          "--plugin NAME (a fresh encoder) or --anchor MODEL (texts and pictures only) to embed "
                          "every argument")
    return model, tuple(inputs)
