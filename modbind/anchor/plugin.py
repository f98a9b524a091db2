"""The core's anchor contribution: open_clip models, registered through the same hook third parties use."""

from __future__ import annotations

from collections.abc import Callable

import modbind
from modbind.anchor.openclip import OpenClipProvider
from modbind.contracts import AnchorProvider


@modbind.hookimpl
def register_anchors(register: Callable[[AnchorProvider], None]) -> None:
    register(OpenClipProvider())
