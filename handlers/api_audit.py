"""REST endpoints for the audit capability (see README)."""

from __future__ import annotations

from handlers.routing import Endpoint

ENDPOINTS: list[Endpoint] = []
