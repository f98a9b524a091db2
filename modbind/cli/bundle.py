"""``modbind bundle``: put exports of one anchor into one folder that loads, evaluates and embeds as one model."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def bundle() -> None:
    """Bundles: aligned models of several modalities that share one anchor, used as one model."""


@bundle.command("create")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.argument("exports", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
def create(out: Path, exports: tuple[Path, ...]) -> None:
    """Write a bundle folder OUT from EXPORTS (export folders or bundles) aligned to the same anchor.

    Each export lands in OUT/<modality>/ (hard-linked where the filesystem allows, else copied), listed
    in OUT/bundle.json. Use OUT wherever a model folder goes: modbind.load, modbind eval, modbind embed.

    \b
    Example:
      modbind bundle create runs/bundle runs/audio/export runs/depth/export
      modbind eval runs/bundle --task emergent --data test.jsonl --modality audio -o pair=depth
    """
    from modbind.model.bundle import create_bundle, read_cards

    cards = read_cards([create_bundle(out, exports)])
    for folder, card in cards:
        click.echo(f"{card['modality']}: {card['plugin']} -> {folder}")
    click.echo(f"bundle: {out} (anchor {cards[0][1].get('anchor_identity')})")
