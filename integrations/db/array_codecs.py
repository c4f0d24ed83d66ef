"""The codecs of PostgreSQL's built-in array types, looked up once per process, not once per connection.

asyncpg decodes the built-in scalar types on its own, but an array of most of them (``integer[]``,
``bigint[]``, ``double precision[]``, ``varchar[]``, ``timestamptz[]``: the relay's claims, the send
path, the audit chain, the consent snapshot) it first looks up in the catalog, on every new
connection, with a recursive query that a fresh backend takes ~6 ms of CPU to plan (and two
``set_config('jit', ...)`` round trips around it). A serving process opens its connections once, but
every app start, reconnect and test opens new ones: over tests/api and tests/integration the lookups
took ~10 s of the ~50 s of CPU PostgreSQL used (1,595 of them for 1,787 backends, pg_stat_statements).

A built-in type has the same OID on every PostgreSQL server (its catalog fixes them), so what one
connection learnt serves every later connection of the process, on any server: :func:`prime`
gives a new connection those codecs before its first statement. Only built-in types are kept
(OIDs below ``FirstNormalObjectId``); an array of a type a migration creates is looked up by asyncpg
as before. :func:`prime` reaches into two asyncpg internals (``Connection._introspect_types`` and the
protocol's ``register_data_types``; asyncpg is pinned in pyproject.toml); without them it does
nothing and asyncpg looks the types up itself, as it always did.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

#: PostgreSQL's first OID for objects a database creates; built-in types' OIDs are below it.
FIRST_NORMAL_OBJECT_ID = 16384

#: The built-in array types primed on every connection (the OIDs of PostgreSQL's pg_type.dat).
ARRAY_TYPES: tuple[int, ...] = (
    1000,  # boolean[]
    1005,  # smallint[]
    1007,  # integer[]
    1016,  # bigint[]
    1021,  # real[]
    1022,  # double precision[]
    1231,  # numeric[]
    1014,  # character(n)[]
    1015,  # varchar[]
    1115,  # timestamp[]
    1185,  # timestamptz[]
    1182,  # date[]
    1187,  # interval[]
    2951,  # uuid[]
    199,  # json[]
    3807,  # jsonb[]
)

# What the first connection of the process learnt (asyncpg's type records, plain data); a few
# connections opened at once before it is known each look the types up once, which is harmless.
_learnt: list[Any] = []


async def prime(connection: Any) -> None:
    """Give a new asyncpg ``connection`` the codecs of :data:`ARRAY_TYPES` without a catalog lookup
    (after the process's first, which makes one for all of them)."""
    protocol = getattr(connection, "_protocol", None)
    introspect = getattr(connection, "_introspect_types", None)
    if protocol is None or introspect is None or not hasattr(protocol, "get_settings"):
        return
    if not _learnt:
        types, _statement = await introspect(ARRAY_TYPES, None)
        _learnt[:] = [t for t in types if t["oid"] < FIRST_NORMAL_OBJECT_ID]
    protocol.get_settings().register_data_types(_learnt)


def prime_each_connection(engine: AsyncEngine) -> None:
    """Have every new connection of ``engine`` primed (:func:`prime`) as it is opened."""
    event.listen(engine.sync_engine, "connect", _primed)


def _primed(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.run_async(prime)
