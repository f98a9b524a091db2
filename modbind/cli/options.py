"""Command-line options several commands share, defined once so their name and meaning never drift apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from modbind.data.paths import ALLOW_ABSOLUTE_FLAG


def allow_absolute_option(
    help: str = "Accept absolute paths inside manifests (refused by default; relative paths never leave their root).",
) -> Callable[[Any], Any]:
    """``--allow-absolute-paths``: the explicit opt-in :func:`modbind.data.paths.resolve_under` asks for."""
    return click.option(ALLOW_ABSOLUTE_FLAG, "allow_absolute_paths", is_flag=True, help=help)
