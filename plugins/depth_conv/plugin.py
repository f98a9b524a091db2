"""Hook implementation: register the depth encoder with modbind (entry point ``depth_conv``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import modbind
from modbind_depth_conv.encoder import DepthConvPlugin


@modbind.hookimpl
def register_encoders(register: Callable[[modbind.EncoderPlugin[Any]], None]) -> None:
    register(DepthConvPlugin())
