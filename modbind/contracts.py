"""The types a plugin implements: what the core knows about a modality, an anchor, a dataset or a task.

A plugin contributes instances of these classes through the hooks in :mod:`modbind.hookspecs`. The
trainer, the evaluator and the CLI see a modality *only* through :class:`EncoderPlugin`, so depth, IMU
or any other sensor fits the same pipeline as audio.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from modbind.errors import ConfigError, did_you_mean
from modbind.pretrained import PretrainedCheckpoint, resolve_checkpoint, with_implied_options

Batch = dict[str, Tensor]
"""A dict of batched tensors, e.g. ``{"waveform": (B, N), "padding_mask": (B, N)}``."""


class ItemRandomness:
    """One random stream per item of a batch, for train-time augmentation that must not depend on the batch.

    The trainer seeds item i's stream from (recipe seed, epoch, the item's position in the epoch), so an item
    is augmented the same way whichever rank, batch slot or world size holds it, and again after a resume.
    Each stream is a CPU generator (augmentations draw a few numbers per item); :meth:`uniform` moves the
    draws to the device in one asynchronous copy, so it costs no host sync on a GPU.
    """

    def __init__(self, seeds: Sequence[int]):
        self._generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def __len__(self) -> int:
        return len(self._generators)

    def uniform(self, *shape: int, device: torch.device | str | None = None) -> Tensor:
        """(items, *shape) float32 uniform in [0, 1) on ``device``; row i comes from item i's stream."""
        values = torch.stack([torch.rand(shape, generator=g) for g in self._generators]) if self._generators \
            else torch.empty((0, *shape))
        target = torch.device(device) if device is not None else values.device
        if target.type == "cuda":
            values = values.pin_memory()  # a copy from pageable memory would wait for the GPU
        return values.to(target, non_blocking=True)


Randomness = torch.Generator | ItemRandomness | None
"""What ``augment`` receives: per-item streams from the trainer, one generator for the whole batch (seeded
use outside training), or None for torch's global generator."""


def draw_uniform(randomness: Randomness, items: int, *shape: int, device: torch.device | str) -> Tensor:
    """(items, *shape) uniform [0, 1) draws on ``device`` from any :data:`Randomness`: what augmentations call,
    so they work with the trainer's per-item streams and with a plain generator alike."""
    if isinstance(randomness, ItemRandomness):
        if len(randomness) != items:
            raise ValueError(f"{len(randomness)} random streams for a batch of {items} items")
        return randomness.uniform(*shape, device=device)
    draw_on = randomness.device if randomness is not None else device
    return torch.rand((items, *shape), generator=randomness, device=draw_on).to(device)


class EncoderOptions(BaseModel):
    """Options every encoder accepts. Plugins subclass this and add their own fields."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | Path | None = None
    """An official checkpoint to start from: a name from the plugin's table (``modbind checkpoints``) or a
    file path; None builds the encoder from the plugin's default config."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to trade compute for memory."""
    lora_targets: list[str] | None = None
    """Module-name patterns LoRA wraps; None uses the plugin's declared default."""


OptionsT = TypeVar("OptionsT", bound=EncoderOptions)


@dataclass
class EncoderOutput:
    """What an encoder returns: a pooled vector per item and, where it has them, token features."""

    pooled: Tensor
    """(B, width)"""
    tokens: Tensor | None = None
    """(B, T, width)"""
    token_padding_mask: Tensor | None = None
    """(B, T), True where a token covers only padding."""


class ModalityEncoder(nn.Module):
    """Base class of plugin encoders: ``forward(features) -> EncoderOutput`` with a known ``width``."""

    width: int

    def forward(self, features: Batch) -> EncoderOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def layers(self) -> list[nn.Module]:
        """Blocks from input to output; partial fine-tuning trains the last k of them."""
        raise NotImplementedError(f"{type(self).__name__} does not list its layers for partial fine-tuning")

    def set_step_seed(self, seed: int) -> None:
        """Seed the random choices every rank must make alike, before a training forward.

        The trainer calls this before each training forward with a seed derived from (recipe seed, epoch,
        micro-step), never from the rank. Draw choices that apply to the whole batch from it (e.g. which
        layers layerdrop skips), so every rank and every world size makes the same ones. Per-item noise such
        as dropout masks stays on torch's global generator. Default: nothing to seed.
        """

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Turn activation recomputation on or off (default: not supported, so refuse loudly)."""
        if enabled:
            raise NotImplementedError(f"{type(self).__name__} does not support gradient checkpointing")


@dataclass(frozen=True)
class PackedItem:
    """One decoded item as bytes for a shard, plus the JSON-able facts needed to rebuild it."""

    data: bytes
    meta: dict[str, Any]


class EncoderPlugin(abc.ABC, Generic[OptionsT]):
    """One modality encoder: how to read an item, turn it into features and encode it.

    The data path is split so each step runs where it is cheapest:
    ``load_item`` and ``preprocess`` run per item in DataLoader workers (CPU), ``featurize`` and
    ``augment`` run batched on the training device, then the encoder. Every method receives the
    plugin's own validated options (an instance of :attr:`Options`).
    """

    name: ClassVar[str]
    """Unique name used on the command line, e.g. ``audio_beats``."""
    modality: ClassVar[str]
    """What kind of data it encodes, e.g. ``audio``, ``imu``, ``depth``."""
    Options: ClassVar[type[EncoderOptions]] = EncoderOptions
    """The pydantic model of this plugin's options (recipe section ``plugin.options``)."""
    file_extensions: ClassVar[tuple[str, ...]] = ()
    """File endings ``load_item`` reads, e.g. ``(".wav", ".flac")``; used to pick files from a folder."""
    item_noun: ClassVar[str] = "items"
    """What the console calls this modality's items, e.g. ``clips`` for audio."""
    zeroshot_templates: ClassVar[Mapping[str, str]] = {}
    """Default zero-shot prompt per language code, ``{}`` where the class name goes (e.g. audio:
    ``{"en": "This is a sound of {}."}``). Languages without one need a template from the user."""
    default_lora_targets: ClassVar[tuple[str, ...]] = ()
    """Module-name patterns LoRA wraps by default."""
    packed_format: ClassVar[str | None] = None
    """Name of the byte format :meth:`pack_item` writes into shards; None: this plugin cannot pack."""
    pretrained: ClassVar[Mapping[str, PretrainedCheckpoint]] = MappingProxyType({})
    """Official checkpoints ``options.checkpoint`` may name instead of a path (see :mod:`modbind.pretrained`)."""

    def options(self, raw: Mapping[str, Any] | EncoderOptions | None = None) -> OptionsT:
        """Validate raw options into this plugin's model, with errors that name the bad field.

        A ``checkpoint`` that names an entry of :attr:`pretrained` brings the options that checkpoint
        implies; the user's own options win where they agree and are an error where they contradict.
        """
        if isinstance(raw, self.Options):
            return raw  # type: ignore[return-value]
        where = f"plugin.options ({self.name})"
        values = with_implied_options(dict(raw or {}), self.pretrained, self.Options, where)
        return validated(self.Options, values, where)  # type: ignore[return-value]

    def checkpoint_file(self, options: OptionsT) -> Path | None:
        """``options.checkpoint`` as a local file: a known name comes from the cache (downloaded if needed)."""
        if options.checkpoint is None:
            return None
        return resolve_checkpoint(options.checkpoint, self.pretrained, owner=self.name).path

    @abc.abstractmethod
    def load_item(self, path: Path, options: OptionsT) -> Any:
        """Decode one raw item from a file; raise :class:`modbind.DataError` naming the file if it cannot.

        An item repaired while decoding (e.g. a few NaN samples zeroed) may say so in a ``repairs`` attribute,
        a sequence of short tags; the trainer counts such items per epoch beside the skipped ones.
        """

    def as_item(self, value: Any, options: OptionsT, **hints: Any) -> Any:
        """An in-memory value (array, tensor, ...) as a raw item ``preprocess`` accepts.

        ``hints`` are facts the value does not carry, e.g. ``sample_rate`` for a bare waveform. The default
        takes the value as it is and accepts no hints.
        """
        if hints:
            raise ConfigError(f"plugin '{self.name}' takes no hints for in-memory items (got {', '.join(hints)})")
        return value

    @abc.abstractmethod
    def preprocess(self, item: Any, options: OptionsT, *, train: bool,
                   generator: torch.Generator | None = None) -> Batch:
        """Per-item CPU work (resample, crop, pad) giving fixed-shape tensors that stack into a batch.

        ``train`` selects the random training policy (e.g. random truncation) over the deterministic
        evaluation policy. Runs in DataLoader workers, so keep it free of model state.
        """

    def featurize(self, batch: Batch, options: OptionsT) -> Batch:
        """Batched device-side feature extraction (e.g. log-mel fbank). Default: pass through."""
        return batch

    def augment(self, features: Batch, options: OptionsT, generator: Randomness = None) -> Batch:
        """Train-time augmentation of featurized batches (e.g. SpecAugment). Default: none.

        Draw random numbers with :func:`draw_uniform` (or ``generator.uniform`` when it is an
        :class:`ItemRandomness`): the trainer passes one stream per item, so that an item's augmentation
        depends on the item alone, never on the rank or batch slot that holds it.
        """
        return features

    def eval_policy(self, options: OptionsT) -> str:
        """In words, what ``preprocess(train=False)`` does; evaluation reports print it."""
        return f"deterministic: plugin '{self.name}' preprocessing with train=False (no random crops)"

    def build_encoder(self, options: OptionsT) -> ModalityEncoder:
        """The encoder: from ``options.checkpoint`` when set, else freshly initialised; then configured."""
        if not isinstance(options, self.Options):  # options validated by another plugin: a caller's bug
            raise TypeError(f"{self.name}: expected {self.Options.__name__}, got {type(options).__name__}")
        checkpoint = self.checkpoint_file(options)
        encoder = self.new_encoder(options) if checkpoint is None else self.load_checkpoint(checkpoint, options)
        encoder.set_gradient_checkpointing(options.gradient_checkpointing)
        return encoder

    @abc.abstractmethod
    def new_encoder(self, options: OptionsT) -> ModalityEncoder:
        """A freshly initialised encoder with the architecture ``options`` describe."""

    def load_checkpoint(self, path: Path, options: OptionsT) -> ModalityEncoder:
        """Build the encoder from an official checkpoint file (never unpickling untrusted code)."""
        raise ConfigError(f"plugin '{self.name}' cannot load checkpoints; remove plugin.options.checkpoint")

    def export_options(self, options: OptionsT, encoder: ModalityEncoder) -> OptionsT:
        """Options that rebuild ``encoder`` without its checkpoint file, for an export's card.

        Default: ``options`` as they are. Override when a checkpoint brings architecture the options do not
        state and the weights' shapes do not reveal (AudioMAE's head count).
        """
        return options

    def lora_targets(self, options: OptionsT) -> list[str]:
        """Module-name patterns LoRA should wrap (``options.lora_targets`` overrides the default)."""
        if options.lora_targets is not None:
            return list(options.lora_targets)
        return list(self.default_lora_targets)

    def pack_item(self, item: Any, options: OptionsT, *, max_seconds: float | None = None) -> PackedItem:
        """A decoded item as shard bytes (``modbind data pack``); ``max_seconds`` trims time series."""
        raise ConfigError(f"plugin '{self.name}' cannot pack {self.modality} items into shards; "
                          "train from its manifest instead")

    def unpack_item(self, packed: PackedItem, options: OptionsT) -> Any:
        """The raw item :meth:`pack_item` stored (what ``load_item`` would have returned)."""
        raise ConfigError(f"plugin '{self.name}' cannot read packed shards; train from a manifest instead")


class Augmentation(abc.ABC):
    """A named, batched train-time transform of featurized inputs, selectable from a recipe."""

    name: ClassVar[str]
    modality: ClassVar[str]
    """Modality whose features it understands; ``"*"`` for any."""
    Params: ClassVar[type[BaseModel] | None] = None
    """The pydantic model of the recipe entry's ``params`` (forbid extra keys): ``recipe validate`` then
    rejects a misspelt or out-of-range parameter before any set-up. None leaves the params unchecked."""

    @abc.abstractmethod
    def __call__(self, features: Batch, generator: Randomness = None, **params: Any) -> Batch:
        """Return augmented features; ``params`` come from the recipe entry. Draw random numbers with
        :func:`draw_uniform` (see :meth:`EncoderPlugin.augment`)."""


class AnchorProvider(abc.ABC):
    """A source of frozen, pre-aligned text-image spaces (e.g. OpenCLIP models)."""

    name: ClassVar[str]

    @abc.abstractmethod
    def handles(self, model: str) -> bool:
        """Whether this provider understands the recipe's ``anchor.model`` string."""

    @abc.abstractmethod
    def load(self, model: str, pretrained: str | None, **kwargs: Any) -> Any:
        """Load the frozen anchor (a :class:`modbind.anchor.Anchor`), offline when weights are on disk."""

    def known_models(self) -> list[str]:
        """Model names this provider offers, for "did you mean" hints when a name is misspelt."""
        return []

    def pretrained_in_use(self, model: str, pretrained: str | None) -> str | None:
        """The ``pretrained`` value :meth:`load` actually uses for ``model``: None where it ignores the value.

        Model cards record this, so a card never names weights that were not loaded. Default: as given.
        """
        return pretrained


class DatasetReader(abc.ABC):
    """Reads one dataset's original metadata layout into manifest entries."""

    name: ClassVar[str]
    splits: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def read(self, root: Path, split: str | None = None) -> Iterator[Any]:
        """Yield manifest entries (:class:`modbind.data.manifest.ManifestEntry`) for ``split``, their paths relative
        to ``root``; ``data prepare`` refuses a path that leaves it (:mod:`modbind.data.paths`)."""


class EvalTask(abc.ABC):
    """One evaluation protocol (retrieval, zero-shot classification, ...)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel] | None] = None
    """The pydantic model of the task's options; None: the task checks them itself (or takes none)."""

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Validate ``options`` without running anything, so a suite fails before a model loads.

        The default validates against :attr:`Options` when the task declares it.
        """
        if self.Options is not None:
            validated(self.Options, options, f"options of task '{self.name}'")

    @abc.abstractmethod
    def run(self, context: Any, **options: Any) -> Any:
        """Evaluate and return a result record (see :mod:`modbind.eval`)."""


ModelT = TypeVar("ModelT", bound=BaseModel)


def validated(model: type[ModelT], raw: Mapping[str, Any], where: str, *, prefix: str = "") -> ModelT:
    """``raw`` validated into ``model``, or a ConfigError with one line per problem (see below)."""
    try:
        return model.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, where, model, prefix=prefix)) from None


def describe_validation_error(err: ValidationError, where: str, model: type[BaseModel], *, prefix: str = "") -> str:
    """One line per problem: the dotted field, what is wrong, and the nearest valid key if it is unknown.

    ``prefix`` is put before each field path, e.g. ``train.augmentations.0.params.`` for a nested model.
    """
    lines = []
    for problem in err.errors():
        path = prefix + ".".join(str(p) for p in problem["loc"])
        if problem["type"] == "extra_forbidden":
            hint = did_you_mean(str(problem["loc"][-1]), _field_names(model, problem["loc"][:-1]))
            lines.append(f"{where}: unknown key '{path}'{hint}")
        else:
            lines.append(f"{where}: '{path}': {problem['msg']} (got {problem.get('input')!r})")
    return "\n".join(lines)


def _field_names(model: type[BaseModel], parents: tuple[Any, ...]) -> list[str]:
    """Valid keys at a nested location of ``model`` (best effort: follows nested pydantic models)."""
    current: Any = model
    for part in parents:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _nested_model(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _nested_model(annotation: Any) -> Any:
    """The pydantic model inside an annotation like ``Model | None`` or ``list[Model]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _nested_model(arg)
        if found is not None:
            return found
    return None
