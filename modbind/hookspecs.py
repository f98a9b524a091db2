"""The plugin author's manual: every hook modbind calls, one documented function each.

A plugin is a module (or object) with functions decorated by :data:`modbind.hookimpl` whose names match
these specs. Each hook receives a ``register`` callback; call it once per thing you contribute. Expose the
module through the ``modbind.plugins`` entry-point group in your package metadata::

    [project.entry-points."modbind.plugins"]
    imu_conv = "modbind_imu.plugin"

See docs/writing-a-plugin.md for a complete example.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from modbind.contracts import AnchorProvider, Augmentation, DatasetReader, EncoderPlugin, EvalTask

hookspec = pluggy.HookspecMarker("modbind")


@hookspec
def register_encoders(register: Callable[["EncoderPlugin"], None]) -> None:
    """Contribute modality encoders.

    Call ``register(MyEncoderPlugin())`` with an instance of a :class:`modbind.EncoderPlugin` subclass. It
    supplies the encoder's name and modality, its pydantic options model, how to load one raw item from a
    file, CPU-side preprocessing, batched device-side featurization, train-time augmentation, the
    ``nn.Module`` (a :class:`modbind.ModalityEncoder`), an official-checkpoint loader and the module
    names LoRA should target. Names must be unique across all installed plugins.
    """


@hookspec
def register_augmentations(register: Callable[["Augmentation"], None]) -> None:
    """Contribute named train-time augmentations that recipes can add with ``train.augmentations``.

    Call ``register(MyAugmentation())`` with a :class:`modbind.Augmentation`. It works on featurized,
    batched inputs on the training device and must leave shapes unchanged.
    """


@hookspec
def register_dataset_readers(register: Callable[["DatasetReader"], None]) -> None:
    """Contribute readers that turn a dataset's original metadata into manifests (``modbind data prepare``).

    Call ``register(MyReader())`` with a :class:`modbind.DatasetReader`.
    """


@hookspec
def register_eval_tasks(register: Callable[["EvalTask"], None]) -> None:
    """Contribute evaluation tasks runnable with ``modbind eval --task NAME``.

    Call ``register(MyTask())`` with a :class:`modbind.EvalTask`.
    """


@hookspec
def register_anchors(register: Callable[["AnchorProvider"], None]) -> None:
    """Contribute providers of frozen text-image anchor spaces (e.g. another CLIP family).

    Call ``register(MyProvider())`` with a :class:`modbind.AnchorProvider`. The first provider whose
    ``handles(model)`` is true loads the recipe's ``anchor.model``.
    """
