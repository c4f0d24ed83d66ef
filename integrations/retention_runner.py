"""Database side of ``caremsg retention plan|run``: the retention workflows
(:mod:`engine.workflows.retention`) on the configured database, outside the service.

``run`` writes what a scheduled sweep writes (the emptied content, its audit records, the outbox
entries that delete the channels' copies); a running service's relay delivers those entries.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from engine.policy import Policy
from engine.services import Services
from integrations.offline import offline_services


def retention_services(database_url: str, policy: Policy) -> AbstractAsyncContextManager[Services]:
    """Services enough for the retention workflows, on ``database_url`` under ``policy``."""
    return offline_services(database_url, policy)
