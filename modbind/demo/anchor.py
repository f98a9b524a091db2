"""The demo's pre-aligned anchor: a tiny open_clip model trained CLIP-style on the world's pictures.

The real method starts from a text–image model that is already aligned across languages. The demo
builds its own with :func:`modbind.anchor.build_tiny_openclip` (tiny ViT + tiny XLM-R text tower with a
subword tokenizer trained on the world's captions) and trains both towers on image–caption pairs in
**all** languages — or, for the control, in English only. The result is saved as an open_clip
``local-dir:`` model, loaded later through the same anchor code path as the real OpenCLIP weights, and
cached under the user cache dir keyed by everything that determines it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from modbind import AnchorConfig, ManifestEntry, read_manifest
from modbind.atomic import write_json_atomic
from modbind.cache import cache_root
from modbind.demo.captions import all_template_texts
from modbind.demo.concepts import LANGUAGES
from modbind.demo.markers import read_marker
from modbind.demo.world import WorldPaths

if TYPE_CHECKING:  # torch is imported where training happens: the demo's parent process never needs it
    import torch

ANCHOR_VERSION = 1
"""Bump when training changes, so cached anchors are rebuilt."""

MARKER = "demo_anchor.json"
"""Written last into a finished anchor folder: its presence means the cached anchor is complete."""


@dataclass(frozen=True)
class AnchorRecipe:
    """Everything that determines a trained demo anchor besides the world itself."""

    languages: tuple[str, ...] = LANGUAGES
    """Caption languages the towers are trained on (the control uses ``("en",)``)."""
    steps: int = 700
    batch_size: int = 32
    """Small batches and many steps: the prototype found anchor quality grows most this way."""
    lr: float = 2e-3
    warmup_steps: int = 40
    weight_decay: float = 0.05
    embed_dim: int = 32
    seed: int = 0
    sizes: tuple[tuple[str, int], ...] = (("context_length", 24),)
    """Overrides of :data:`modbind.anchor.tiny.DEFAULT_SIZES`."""
    version: int = ANCHOR_VERSION


@dataclass
class DemoAnchor:
    """A trained demo anchor on disk and how to load it."""

    path: Path
    recipe: AnchorRecipe
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> AnchorConfig:
        """The recipe section that loads this anchor (``local-dir:``, no pretrained tag)."""
        return AnchorConfig(model=f"local-dir:{self.path}", pretrained=None)


def default_cache_dir() -> Path:
    """The cache root (``$MODBIND_CACHE_DIR`` or the platform's user cache dir for modbind)."""
    return cache_root()


def anchor_key(world: WorldPaths, recipe: AnchorRecipe) -> str:
    text = json.dumps({"world": world.spec.key(), "anchor": asdict(recipe)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_demo_anchor(world: WorldPaths, recipe: AnchorRecipe = AnchorRecipe(), *, cache_dir: Path | None = None,
                      progress: bool = True, on_step: Callable[[int], None] | None = None) -> DemoAnchor:
    """Train (or reuse from the cache) the demo anchor for ``world`` and return where it is.

    ``on_step`` is told how many training steps are done (all of them at once for a cached anchor).
    """
    missing = [lang for lang in recipe.languages if lang not in world.spec.languages]
    if missing:
        raise ValueError(f"the world at {world.root} has no captions in {missing}")
    tag = "-".join(recipe.languages)
    target = Path(cache_dir or default_cache_dir()) / "demo" / f"anchor-{tag}-{anchor_key(world, recipe)}"
    cached = read_marker(target / MARKER)
    if cached is not None:
        if on_step is not None:
            on_step(recipe.steps)
        return DemoAnchor(target.resolve(), recipe, cached)
    from modbind.anchor import build_tiny_openclip, save_openclip_weights

    started = time.perf_counter()
    texts = all_template_texts(world.spec.concepts(), world.spec.languages)
    path = build_tiny_openclip(target, texts, embed_dim=recipe.embed_dim, seed=recipe.seed, **dict(recipe.sizes))
    model, preprocess, tokenizer = _open(path)
    losses = train_towers(model, preprocess, tokenizer, world, recipe, progress=progress, on_step=on_step)
    save_openclip_weights(model, path)
    report = {"key": anchor_key(world, recipe), "recipe": asdict(recipe), "world": world.spec.key(),
              "losses": losses, "train_seconds": round(time.perf_counter() - started, 2)}
    report = json.loads(json.dumps(report))  # the same plain JSON types a cached report is read back as
    write_json_atomic(path / MARKER, report)
    return DemoAnchor(path, recipe, report)


def _open(path: Path) -> tuple[torch.nn.Module, Any, Any]:
    """The open_clip model, its eval image transform and tokenizer, exactly as ``local-dir:`` loads them."""
    import open_clip

    name = f"local-dir:{path}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    return model, preprocess, open_clip.get_tokenizer(name)


def _pairs(world: WorldPaths, languages: Sequence[str]) -> tuple[list[ManifestEntry], list[list[str]]]:
    entries = [e for e in read_manifest(world.train) if e.image]
    captions = [[c for lang in languages for c in e.captions_in(lang)] for e in entries]
    keep = [i for i, caps in enumerate(captions) if caps]
    return [entries[i] for i in keep], [captions[i] for i in keep]


def train_towers(model: torch.nn.Module, preprocess: Any, tokenizer: Any, world: WorldPaths, recipe: AnchorRecipe,
                 *, progress: bool = True, on_step: Callable[[int], None] | None = None) -> list[float]:
    """Symmetric InfoNCE on (image, caption-in-a-random-language) pairs; returns the loss every 50 steps.

    Pictures and captions are decoded and tokenized once up front; a seeded generator picks the batch
    and the caption, so the same seed gives the same anchor.
    """
    import torch
    import torch.nn.functional as F
    from PIL import Image

    entries, captions = _pairs(world, recipe.languages)
    if len(entries) < 2:
        raise ValueError(f"the world at {world.root} has fewer than 2 captioned pictures to train an anchor on")
    images = torch.stack([preprocess(Image.open(world.root / e.image).convert("RGB")) for e in entries])
    vocabulary = sorted({c for caps in captions for c in caps})
    index = {c: i for i, c in enumerate(vocabulary)}
    tokens = tokenizer(vocabulary)
    caption_ids = [torch.tensor([index[c] for c in caps]) for caps in captions]
    generator = torch.Generator().manual_seed(recipe.seed)
    batch = min(recipe.batch_size, len(entries))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                                  betas=(0.9, 0.98), eps=1e-6)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine(s, recipe.warmup_steps, recipe.steps))
    model.train()
    losses: list[float] = []
    targets = torch.arange(batch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        bar = tqdm(range(recipe.steps), desc=f"anchor ({'+'.join(recipe.languages)})", unit="step",
                   disable=not progress)
        for step in bar:
            rows = torch.randperm(len(entries), generator=generator)[:batch]
            picks = [int(caption_ids[r][torch.randint(len(caption_ids[r]), (1,), generator=generator)])
                     for r in rows.tolist()]
            image_z = model.encode_image(images[rows], normalize=True)
            text_z = model.encode_text(tokens[picks], normalize=True)
            logits = model.logit_scale.exp().clamp(max=100) * image_z @ text_z.T
            loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % 50 == 0 or step == recipe.steps - 1:
                losses.append(round(loss.item(), 4))
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if on_step is not None:
                on_step(step + 1)
    model.eval()
    return losses


def _cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

