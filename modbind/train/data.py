"""Training data: manifests → a deterministic, resumable, weighted mix of (item, caption) examples.

Per-item CPU work (decode, resample, crop) runs in DataLoader workers; featurization and augmentation run
batched on the device (see :mod:`modbind.train.trainer`). Every random choice about an item (epoch order,
which caption, where to crop, its augmentation) is seeded from ``(seed, epoch, position)``, so a resumed run
sees exactly the batches an uninterrupted run would have seen, and the world size changes none of them.
Items that cannot be read come back as :class:`Skipped` and are counted, never raised mid-epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from modbind.config import DataSource
from modbind.contracts import Batch, EncoderOptions, EncoderPlugin
from modbind.data.manifest import iter_manifest
from modbind.data.paths import resolve_under
from modbind.data.shards import ShardRef, index_shards, is_shard_source, read_packed
from modbind.errors import ConfigError, DataError


@dataclass(frozen=True)
class Example:
    """One trainable item: where it lives and the captions (in the training language) that describe it."""

    id: str
    path: Path
    captions: tuple[str, ...]
    packed: ShardRef | None = None
    """Set for items from ``modbind data pack`` shards (decoded by the plugin); None for manifest files."""


@dataclass
class SourceExamples:
    """The usable examples of one :class:`DataSource` and its mixing weight."""

    name: str
    examples: list[Example]
    weight: float
    without_captions: int = 0
    """Rows left out because they have no caption in the training language."""
    where: str = ""
    """The recipe entry it comes from, e.g. ``data.train[0]``."""

    def describe_left_out(self, language: str) -> str | None:
        """A console line about rows without a caption in ``language`` (None when every row had one)."""
        if not self.without_captions:
            return None
        rows = len(self.examples) + self.without_captions
        return (f"{self.where} ({self.name}): {self.without_captions} of {rows} rows have no '{language}' caption "
                "(data.caption_language) and are left out")


@dataclass(frozen=True)
class Skipped:
    """A placeholder for an item that could not be read, with the reason for the report."""

    id: str
    reason: str


@dataclass
class TrainBatch:
    """What the DataLoader yields: stacked preprocessed tensors, one caption per item, and what was skipped."""

    inputs: Batch
    captions: list[str]
    ids: list[str]
    skipped: list[Skipped] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    """``"<id>: <tag>, <tag>"`` for each readable item the plugin had to repair while decoding."""
    positions: list[int] = field(default_factory=list)
    """Each readable item's position in the epoch: what its random choices are keyed by (with seed and epoch)."""

    def __len__(self) -> int:
        return len(self.ids)

    def pin_memory(self) -> TrainBatch:
        """Page-locked copies of the inputs (the DataLoader calls this when ``pin_memory`` is on)."""
        pinned = {key: value.pin_memory() for key, value in self.inputs.items()}
        return TrainBatch(pinned, self.captions, self.ids, self.skipped, self.repaired, self.positions)


def read_sources(sources: Sequence[DataSource], language: str, modality: str | None = None, *,
                 section: str = "data.train") -> list[SourceExamples]:
    """Read every manifest; items without a caption in ``language`` are left out (and counted).

    Each entry's item is its ``modality`` file (``items[modality]``, else ``path``). A path that leaves its
    source's root (or an absolute one the source does not allow) fails the whole run here, before training
    starts: it is a defect of the manifest (or an attack), not an unreadable file to skip and count.
    """
    if not sources:
        raise ConfigError(f"{section} is empty: add at least one manifest, e.g. "
                          f"--set '{section}=[{{manifest: train.jsonl}}]'")
    read: list[SourceExamples] = []
    for index, source in enumerate(sources):
        where = f"{section}[{index}]"
        if is_shard_source(source.manifest):
            read.append(_read_shards(source, language, where))
            continue
        manifest = Path(source.manifest)
        root = Path(source.root) if source.root is not None else manifest.parent
        examples, without = [], 0
        for entry in iter_manifest(manifest):
            path = resolve_under(root, entry.item_path(modality), where=entry.where(),
                                 allow_absolute=source.allow_absolute_paths,
                                 how_to_allow=f"{section}[{index}].allow_absolute_paths: true")
            captions = entry.captions_in(language)
            if not captions:
                without += 1
                continue
            examples.append(Example(entry.id, path, tuple(captions)))
        if not examples:
            raise DataError(f"{manifest}: no item has a '{language}' caption (data.caption_language); "
                            "nothing to train on")
        read.append(SourceExamples(str(manifest), examples, source.weight, without, where))
    return read


def _read_shards(source: DataSource, language: str, where: str) -> SourceExamples:
    """Index packed shards once (headers only): random access later seeks straight to each item's bytes."""
    examples, without = [], 0
    for entry, ref in index_shards(source.manifest):
        captions = entry.captions_in(language)
        if captions:
            examples.append(Example(entry.id, Path(ref.shard), tuple(captions), ref))
        else:
            without += 1
    if not examples:
        raise DataError(f"{source.manifest}: no packed item has a '{language}' caption (data.caption_language)")
    return SourceExamples(str(source.manifest), examples, source.weight, without, where)


def all_captions(sources: Sequence[SourceExamples]) -> list[str]:
    """Every distinct caption, in first-seen order (what the caption cache must hold)."""
    seen: dict[str, None] = {}
    for source in sources:
        for example in source.examples:
            for caption in example.captions:
                seen.setdefault(caption, None)
    return list(seen)


def epoch_order(sources: Sequence[SourceExamples], epoch: int, seed: int) -> list[tuple[int, int]]:
    """The epoch's (source, example) sequence: as long as all sources together, mixed by weight.

    Source ``i`` gets a share of draws proportional to ``weight_i × size_i`` (weight 1 everywhere is a
    plain shuffled concatenation; weight 2 shows that source's items twice as often). Within a source,
    items repeat only after all of them were drawn.
    """
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x5EED))
    sizes = [len(s.examples) for s in sources]
    total = sum(sizes)
    mass = [s.weight * n for s, n in zip(sources, sizes)]
    quotas = [math.floor(total * m / sum(mass)) for m in mass]
    remainders = sorted(range(len(sources)), key=lambda i: total * mass[i] / sum(mass) - quotas[i], reverse=True)
    for i in remainders[: total - sum(quotas)]:
        quotas[i] += 1
    order: list[tuple[int, int]] = []
    for index, (size, quota) in enumerate(zip(sizes, quotas)):
        cycles = [torch.randperm(size, generator=generator) for _ in range(math.ceil(quota / size))]
        drawn = torch.cat(cycles)[:quota] if cycles else torch.empty(0, dtype=torch.long)
        order.extend((index, int(i)) for i in drawn)
    shuffle = torch.randperm(len(order), generator=generator)
    return [order[int(i)] for i in shuffle]


class AlignmentDataset(Dataset):
    """Map-style dataset over an epoch's positions; call :meth:`set_epoch` before each epoch."""

    def __init__(self, sources: list[SourceExamples], plugin: EncoderPlugin, options: EncoderOptions, *, seed: int,
                 train: bool = True):
        self.sources = sources
        self.plugin = plugin
        self.options = options
        self.seed = seed
        self.train = train
        """False for validation: the plugin's deterministic eval crop policy instead of random truncation."""
        self.epoch = 0
        self.order = epoch_order(sources, 0, seed)
        formats = {example.packed.format for source in sources for example in source.examples if example.packed}
        foreign = sorted(formats - {plugin.packed_format})
        if foreign:
            raise ConfigError(f"data names shards packed as '{foreign[0]}', but plugin '{plugin.name}' reads "
                              f"{plugin.packed_format or 'no shards'}; re-pack them with `modbind data pack --plugin "
                              f"{plugin.name}` or train from the manifest")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = epoch_order(self.sources, epoch, self.seed)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position: int) -> dict[str, Any] | Skipped:
        source, index = self.order[position]
        example = self.sources[source].examples[index]
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, position))
        caption = example.captions[int(torch.randint(len(example.captions), (1,), generator=generator))]
        try:
            if example.packed is not None:
                item = self.plugin.unpack_item(read_packed(example.packed), self.options)
            else:
                item = self.plugin.load_item(example.path, self.options)
            tensors = self.plugin.preprocess(item, self.options, train=self.train, generator=generator)
        except Exception as err:  # noqa: BLE001 - any unreadable item is skipped and counted, never fatal
            return Skipped(example.id, f"{example.path}: {type(err).__name__}: {err}")
        repairs = tuple(getattr(item, "repairs", None) or ())  # see EncoderPlugin.load_item
        return {"inputs": tensors, "caption": caption, "id": example.id, "repairs": repairs, "position": position}


def collate(samples: list[dict[str, Any] | Skipped]) -> TrainBatch:
    """Stack the readable samples; keep the skipped ones aside for counting."""
    good = [s for s in samples if not isinstance(s, Skipped)]
    skipped = [s for s in samples if isinstance(s, Skipped)]
    inputs = {key: torch.stack([s["inputs"][key] for s in good]) for key in good[0]["inputs"]} if good else {}
    repaired = [f"{s['id']}: {', '.join(s['repairs'])}" for s in good if s["repairs"]]
    return TrainBatch(inputs, [s["caption"] for s in good], [s["id"] for s in good], skipped, repaired,
                      [s["position"] for s in good])


class RankBatchSampler(Sampler[list[int]]):
    """This rank's micro-batches of an epoch, starting at micro-step ``start`` (for resuming).

    Micro-step k covers epoch positions ``[k·m·W, (k+1)·m·W)``; rank r takes its r-th slice of ``m``.
    The union over ranks is the same set of items whatever the world size, so the global-batch loss
    does not depend on how many processes run.
    """

    def __init__(self, micro_steps: int, micro_batch: int, world: int, rank: int, start: int = 0,
                 limit: int | None = None):
        self.micro_steps = micro_steps
        self.micro_batch = micro_batch
        self.world = world
        self.rank = rank
        self.start = start
        self.limit = limit
        """Positions at or past this are dropped (validation keeps its last, partial batch; may leave a rank empty)."""

    def __len__(self) -> int:
        return max(self.micro_steps - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.micro_steps):
            first = (step * self.world + self.rank) * self.micro_batch
            last = first + self.micro_batch if self.limit is None else min(first + self.micro_batch, self.limit)
            yield list(range(first, max(first, last)))


def make_loader(dataset: AlignmentDataset, sampler: RankBatchSampler, num_workers: int,
                device: torch.device) -> DataLoader:
    """Batches in page-locked memory when training on a GPU, so the host-to-device copy runs at full speed."""
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
                      persistent_workers=False, pin_memory=device.type == "cuda")


@dataclass
class SkipCounter:
    """Skipped versus seen items for one epoch, with the stop rule of ``data.max_skip_fraction``.

    The verdict depends on how many of the epoch's items are unreadable, never on the order they come in:
    mid-epoch (:meth:`check`) the run stops only once the epoch can no longer end under the limit, i.e.
    when the items skipped so far already exceed ``max_fraction × epoch_items``; otherwise the share is
    judged at the end of the epoch, or over the items seen when the run stops early (``check(final=True)``).
    A running share checked after every step would stop data at or just under the limit in some shuffles
    and not in others.
    """

    max_fraction: float
    epoch_items: int
    """Items the whole epoch hands to training (steps per epoch × global batch)."""
    seen: int = 0
    skipped: int = 0
    examples: list[str] = field(default_factory=list)
    repaired: int = 0
    """Readable items the plugin repaired while decoding (counted beside the skips; they do not count
    against the limit)."""
    repaired_examples: list[str] = field(default_factory=list)

    def add(self, seen: int, skipped: int, reasons: Sequence[str] = (), *, repaired: int = 0,
            repairs: Sequence[str] = ()) -> None:
        """Count ``seen`` items of which ``skipped`` were unreadable and ``repaired`` repaired; keep a few
        ``reasons``/``repairs`` for the report."""
        self.seen += seen
        self.skipped += skipped
        self.repaired += repaired
        self.examples.extend(list(reasons)[: max(0, 5 - len(self.examples))])
        self.repaired_examples.extend(list(repairs)[: max(0, 5 - len(self.repaired_examples))])

    @property
    def fraction(self) -> float:
        return self.skipped / self.seen if self.seen else 0.0

    def check(self, *, final: bool = False) -> None:
        """Raise a DataError naming examples when the limit is certainly passed (``final``: judge what was seen)."""
        shown = "; ".join(self.examples[:3])
        if final and self.fraction > self.max_fraction:
            raise DataError(
                f"{self.skipped} of {self.seen} items ({self.fraction:.1%}) could not be read, more than "
                f"data.max_skip_fraction={self.max_fraction}; fix or drop them (e.g. {shown})"
            )
        if not final and self.epoch_items and self.skipped / self.epoch_items > self.max_fraction:
            raise DataError(
                f"{self.skipped} of the epoch's {self.epoch_items} items could not be read (found after "
                f"{self.seen}), more than data.max_skip_fraction={self.max_fraction} of the epoch whatever the "
                f"rest holds; fix or drop them (e.g. {shown})"
            )


def mix_seed(*values: int) -> int:
    """A 63-bit seed from several integers (splitmix-style), so nearby positions get unrelated streams."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state ^= (int(value) + 0x9E3779B97F4A7C15 + (state << 6) + (state >> 2)) & 0xFFFFFFFFFFFFFFFF
        state = (state * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return state & 0x7FFFFFFFFFFFFFFF
