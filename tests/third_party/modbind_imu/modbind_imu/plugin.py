"""Hook implementations: register the IMU encoder with modbind."""

from __future__ import annotations

from collections.abc import Callable

import modbind
from modbind_imu.encoder import ImuConvPlugin


@modbind.hookimpl
def register_encoders(register: Callable[[modbind.EncoderPlugin], None]) -> None:
    register(ImuConvPlugin())
