"""``caremsg audit ...``: tools for auditors."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the ``audit`` subcommands (none yet)."""
