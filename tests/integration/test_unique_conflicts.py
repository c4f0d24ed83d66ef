"""A duplicate email (or organization name) is found without PostgreSQL raising an error: an error
would be written to the server's own log with a DETAIL line quoting the key, an email address."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from engine.errors import Conflict
from engine.model import Role
from engine.ports import NewUser
from integrations.db.identity import SqlOrganizationRepository, SqlUserRepository
from tests.support.database import app_url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(app_url(database_url))
    yield engine
    await engine.dispose()


async def test_a_duplicate_email_is_a_conflict_that_leaves_the_transaction_usable(
    engine: AsyncEngine,
) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        organization = await SqlOrganizationRepository(session).add(
            f"Org {secrets.token_hex(4)}", self_registration=False
        )
        users = SqlUserRepository(session)
        email = f"dup.{secrets.token_hex(4)}@example.org"
        user = NewUser(email, "x", "Jane", "Doe", Role.PEER_SUPPORT, organization.id)
        await users.add(user)

        with pytest.raises(Conflict):
            await users.add(user)
        with pytest.raises(Conflict):
            await SqlOrganizationRepository(session).add(organization.name, self_registration=False)

        # No savepoint was rolled back to: had PostgreSQL raised (and logged) a unique violation,
        # this transaction would now refuse every statement ("current transaction is aborted").
        assert (
            await session.execute(text("SELECT count(*) FROM users WHERE email = :e"), {"e": email})
        ).scalar() == 1
