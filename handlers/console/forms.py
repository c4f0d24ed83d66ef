"""Reading the console's HTML forms the way the API reads JSON: what the pages share."""

from __future__ import annotations

import re
from typing import Any

from multidict import MultiDictProxy

_DIGITS = re.compile(r"[0-9]{1,10}")


def text(form: MultiDictProxy[Any], name: str) -> str:
    """A text field, trimmed; "" when it is missing or is a file."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def json_number(value: str) -> int | str:
    """A JSON number when the field holds one, so the API's model judges it exactly as over the API."""
    return int(value) if _DIGITS.fullmatch(value) else value
