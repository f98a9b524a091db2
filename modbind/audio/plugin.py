"""The core's audio contributions, registered exactly like a plugin's: the SpecAugment augmentation."""

from __future__ import annotations

from collections.abc import Callable

import modbind
from modbind.audio.specaugment import SpecAugment
from modbind.contracts import Augmentation


@modbind.hookimpl
def register_augmentations(register: Callable[[Augmentation], None]) -> None:
    register(SpecAugment())
