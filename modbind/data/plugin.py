"""The core's dataset readers, contributed through the same hook a third-party reader package uses."""

from __future__ import annotations

from collections.abc import Callable

import modbind
from modbind.contracts import DatasetReader


@modbind.hookimpl
def register_dataset_readers(register: Callable[[DatasetReader], None]) -> None:
    from modbind.data.audiocaps import AudioCapsReader
    from modbind.data.clotho import ClothoReader
    from modbind.data.esc50 import ESC50Reader
    from modbind.data.macs import MACSReader
    from modbind.data.urbansound8k import UrbanSound8KReader
    from modbind.data.vggsound import VGGSoundReader
    from modbind.data.wavcaps import WavCapsReader
    from modbind.data.youtube_captions import AudioSetCapsReader, AutoACDReader

    for reader in (AudioCapsReader(), ClothoReader(), WavCapsReader(), AutoACDReader(), AudioSetCapsReader(),
                   MACSReader(), ESC50Reader(), UrbanSound8KReader(), VGGSoundReader()):
        register(reader)
