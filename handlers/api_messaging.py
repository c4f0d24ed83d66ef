"""REST endpoints for the messaging capability (see README)."""

from __future__ import annotations

from handlers.routing import Endpoint

ENDPOINTS: list[Endpoint] = []
