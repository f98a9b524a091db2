"""``modbind demo``: the whole method end to end on a synthetic world, on a laptop CPU."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the world, anchors and training.")
@click.option("--quick", is_flag=True, help="A smaller world and shorter training (under a minute on 2 cores; used by tests).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"),
              show_default=True, help="Folder for the runs and the report (demo_report.json/.md/.png).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the world and the demo anchors are cached (default: the user cache dir, "
                   "or $MODBIND_CACHE_DIR).")
def demo(seed: int, quick: bool, out_dir: Path, cache_dir: Path | None) -> None:
    """Show emergent alignment on a built-in synthetic world of 16 concepts.

    \b
    1. generate the world: audio clips, pictures, depth maps and captions in en/pt/de/ru (cached);
    2. train a tiny open_clip anchor on picture-caption pairs in all four languages, and a control
       anchor on English only (cached);
    3. align a tiny BEATs and, separately, a small depth CNN to each anchor with `modbind align`, on
       English captions only, and bundle the two exports;
    4. evaluate audio->text, zero-shot per language (audio and depth), audio->image and audio<->depth
       against chance, untrained encoders and the English-only-anchor control; print the table and
       write the report.
    """
    from modbind.demo.run import run_demo

    run_demo(out_dir, seed=seed, quick=quick, cache_dir=cache_dir, echo=click.echo)
