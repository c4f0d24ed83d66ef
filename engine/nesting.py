"""How deep a parsed JSON document nests, asked without recursion (a hostile body cannot exhaust it)."""

from __future__ import annotations

from typing import Any


def deeper_than(document: Any, limit: int) -> bool:
    """True if arrays and objects nest more than ``limit`` levels (iterative: no recursion to exhaust)."""
    level: list[Any] = [document]
    for _ in range(limit):
        level = [
            child
            for node in level
            if isinstance(node, (dict, list))
            for child in (node.values() if isinstance(node, dict) else node)
        ]
        if not level:
            return False
    return any(isinstance(node, (dict, list)) for node in level)
