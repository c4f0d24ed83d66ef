"""Uploads per account (``ratelimit.uploads_per_hour`` up to ``uploads_burst``): the request limits
count requests, and each upload is up to 5 MB stored in PostgreSQL, so one account could fill the
database's disk at the token limit (~100 MB a second). Past its budget an upload is refused with 429
before its body is read, nothing is written, and the account's colleagues upload as before."""

from __future__ import annotations

import io

import aiohttp
import asyncpg
import pytest

from handlers.settings import Settings
from tests.support.api import Api, Person
from tests.support.messaging import care_team

PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Settings:
    """The module's app: two uploads per account, then one an hour."""
    limits = settings.ratelimit.model_copy(update={"uploads_burst": 2, "uploads_per_hour": 1.0})
    return settings.model_copy(update={"ratelimit": limits})


async def _upload(
    api: Api, who: Person, conversation_id: int
) -> tuple[int, dict[str, str], dict[str, object]]:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(PDF), filename="notes.pdf", content_type="application/pdf")
    return await api.send("POST", f"/api/conversations/{conversation_id}/attachments", who, data=form)


async def test_an_account_past_its_uploads_is_refused_with_429_and_nothing_is_written(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    conversation = team.conversation["id"]

    accepted = [(await _upload(api, team.peer, conversation))[0] for _ in range(2)]
    status, headers, problem = await _upload(api, team.peer, conversation)
    stored = await db.fetchval(
        "SELECT count(*) FROM message_attachments a JOIN messages m ON m.id = a.message_id"
        " WHERE m.conversation_id = $1",
        conversation,
    )

    assert accepted == [202, 202]
    assert status == 429, problem
    assert headers["Content-Type"].startswith("application/problem+json")
    assert 3000 < int(headers["Retry-After"]) <= 3600  # one upload an hour
    assert problem["detail"] == "Too many uploads from this account; try again later."
    assert stored == 2
    # Per account: a colleague in the same conversation, from the same address, is not held up.
    assert (await _upload(api, team.nurse, conversation))[0] == 202
    scrape = await (await api.client.get("/metrics")).text()
    assert 'caremsg_rate_limit_refusals_total{limit="api_per_upload"} 1.0' in scrape
