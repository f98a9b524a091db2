"""``modbind data embed-text``: fill the caption-embedding cache before training, with a progress bar.

Training then only reads embeddings from the cache and never needs the text tower in device memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click

from modbind.errors import ConfigError


@click.command("embed-text")
@click.argument("manifests", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--recipe", "recipe_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Recipe (file or shipped name) whose anchor, caption language and caption_cache to use "
                   "(default: the paper's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set anchor.precision=bf16 (repeatable).")
@click.option("--anchor", "anchor_model", default=None,
              help="Anchor model instead of the recipe's: an open_clip name, hf-hub:org/repo or local-dir:/path.")
@click.option("--pretrained", default=None, help="Pretrained tag or weights file for --anchor.")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Caption-cache folder (default: the one `modbind align` reads with the same recipe: "
                   "data.caption_cache, else caption-cache/ beside output.dir).")
@click.option("--language", "languages", multiple=True,
              help="Caption language(s) to embed (repeatable; 'all' for every language; default: the recipe's).")
@click.option("--device", default=None, help="Device for the text tower (default: the recipe's anchor.device).")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--progress/--no-progress", default=True)
def embed_text(manifests: tuple[Path, ...], recipe_file: Path | None, overrides: tuple[str, ...],
               anchor_model: str | None, pretrained: str | None, cache_dir: Path | None, languages: tuple[str, ...],
               device: str | None, batch_size: int, progress: bool) -> None:
    """Embed every caption of MANIFESTS with the frozen text tower into the caption cache (resumable).

    Captions already cached are skipped without loading the anchor, so rerunning after an interruption
    finishes the rest, and rerunning on a complete cache is instant. Only training reads this cache;
    `modbind eval` keeps its own cache of anchor embeddings (class prompts included; see its --cache-dir).
    """
    from modbind.anchor import CaptionCache, anchor_identity, load_anchor
    from modbind.data.manifest import iter_manifest
    from modbind.plugins import get_registry
    from modbind.recipes import load_recipe

    recipe = load_recipe(recipe_file, overrides)
    anchor_cfg = recipe.anchor
    if anchor_model is not None or pretrained is not None:
        anchor_cfg = anchor_cfg.model_copy(update={
            "model": anchor_model or anchor_cfg.model,
            "pretrained": pretrained if pretrained is not None else anchor_cfg.pretrained,
        })
    root = cache_dir or recipe.caption_cache_dir
    wanted = set(languages) if languages else {recipe.data.caption_language}
    texts: list[str] = []
    for manifest in manifests:
        for entry in iter_manifest(manifest):
            texts.extend(_texts_of(entry.captions, wanted))
    distinct = list(dict.fromkeys(t for t in texts if t.strip()))
    if not distinct:
        raise ConfigError(
            f"no captions in language(s) {', '.join(sorted(wanted))} in {', '.join(map(str, manifests))}; "
            "pick another --language (or 'all')"
        )
    provider = get_registry().anchor_provider(anchor_cfg.model)
    cache = CaptionCache(root, anchor_identity(anchor_cfg, provider))
    embedded = cache.ensure(distinct, lambda: load_anchor(anchor_cfg, provider, device=device), batch_size=batch_size,
                            progress=progress)
    click.echo(f"{len(distinct)} distinct texts ({embedded} newly embedded) from {len(manifests)} manifest(s); "
               f"cache {cache.folder} holds {len(cache)} for anchor {cache.anchor_identity}")


def _texts_of(by_language: dict[str, list[str]], wanted: set[str]) -> Iterable[str]:
    for language, items in by_language.items():
        if "all" in wanted or language in wanted:
            yield from items
