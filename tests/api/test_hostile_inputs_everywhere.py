"""Hostile input on every endpoint the app serves: a 4xx problem+json naming the field, never a 5xx,
never a write, never an echo of the value in the answer or in the logs.

Generated from the route table (``default_endpoints()``, the table ``create_app`` serves under
``endpoints_key``) through the OpenAPI document built from it, so an endpoint added later is covered
without editing this module: its path ids, request body schema and authentication are read from its
operation. :func:`test_the_cases_cover_the_table_the_app_serves` keeps the import-time table and the
served one the same.

- every path id: a non-ASCII digit, an id beyond the 32-bit range and a negative one;
- every query parameter: a NUL; every query: an unknown parameter named with a NUL;
- every date and time, in a query or a body: one at the calendar's edge, which an offset or a period
  counted from it would carry past what Python and PostgreSQL hold (a 422 naming it, no write);
- every multipart upload: a part whose headers are no headers (a 400);
- every JSON body: nested a thousand deep (a 400 naming ``body``); a body valid by its schema with
  a NUL, or a lone surrogate, in one of its strings, at the top level or nested (a 4xx; a 422 names
  the field), which writes nothing; and an unknown property named with a NUL (its name is not repeated).

The hand-written cases (signed webhooks, invisible characters, phone numbers, a database shutting
down) are in tests/api/test_input_robustness.py. Multipart uploads and signed webhooks are skipped
here (reasons at :data:`SKIP_BODY`). Each request runs as a compliance officer or an administrator of
a fresh organization: validation comes before any decision, so the role only has to log in.

Longer than 400 lines because the case builders (reading the document, bodies from schemas) serve
only these tests, and a test module does not import another.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import FormData
from pydantic import ValidationError
from structlog.testing import capture_logs

from handlers.app import default_endpoints
from handlers.keys import endpoints_key
from handlers.openapi import build_openapi
from handlers.routing import Endpoint
from tests.api.conftest import SharedApp
from tests.support.api import PROBLEM_JSON, Api, Person, field_names, new_request_id

DOCUMENT = build_openapi(default_endpoints(), version="test")
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]
#: Characters no stored string may hold: PostgreSQL refuses NUL in text, and a lone UTF-16 surrogate
#: (which JSON can escape, ``"\ud800"``) is no character at all.
HOSTILE_CHARACTERS = {"nul": "\u0000", "lone-surrogate": "\ud800"}
#: An unknown property or query parameter the client named: what looks like a person's name, and a NUL.
HOSTILE_KEY = "Ann Lee\u0000"
#: A string property's placeholder: text a person might write, which no rule refuses.
TEXT = "Wandering heron by the placid lake"

#: Path ids no endpoint may take: an ARABIC-INDIC DIGIT ONE (int() reads it as 1), an id beyond the
#: 32-bit range of every id column, and a negative one.
HOSTILE_IDS = {"arabic-indic-one": "%D9%A1", "eleven-digits": "99999999999", "minus-one": "-1"}
#: A well-formed id nobody has, where a case needs the other path ids to be valid.
SOME_ID = str(2**31 - 1)
#: Times at the edges of the calendar: an offset carries the first two past Python's years 1 and
#: 9999; six years of disclosures counted back from the third would too.
EDGE_TIMES = {
    "year-1-east": "0001-01-01T00:00:00+05:00",
    "year-9999-west": "9999-12-31T23:59:59-05:00",
    "year-1-utc": "0001-01-01T00:00:00Z",
}
#: A multipart body whose one part has a line for headers that is no header.
BROKEN_MULTIPART = b"--b0undary\r\nnot a header--b0undary--\r\n"

#: Endpoints whose body this module does not send, and why.
SKIP_BODY = {
    "multipart/form-data": "a multipart upload, not a JSON body: its refusals are in test_attachments.py",
    "webhook": "a signed webhook: an unsigned body is refused before it is read; "
    "test_input_robustness.py signs its hostile bodies",
}
#: Who calls an operation of each tag (anything else: a compliance officer).
ROLE_OF_TAG = {"users": "admin", "organizations": "admin"}

#: Cases that fail for a known defect too large to fix here: (operationId, case) -> reason.
KNOWN_DEFECTS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Operation:
    """One operation of the document, as much of it as hostile input needs."""

    endpoint: Endpoint
    operation_id: str
    method: str
    path: str
    tag: str
    path_ids: tuple[str, ...]
    query: tuple[str, ...]
    #: The query parameters that are dates and times.
    query_times: tuple[str, ...]
    body_media_type: str | None
    body_schema: dict[str, Any] | None
    bearer: bool
    webhook: bool

    @property
    def role(self) -> str:
        return ROLE_OF_TAG.get(self.tag, "compliance_officer")

    def url(self, **ids: str) -> str:
        """The path with ``ids`` filled in, every other id a valid one nobody has."""
        url = self.path
        for name in self.path_ids:
            url = url.replace("{" + name + "}", ids.get(name, SOME_ID))
        return url


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema a ``$ref`` points at, and the one non-null option of an optional property."""
    while True:
        if "$ref" in schema:
            schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in schema:
            options = [o for o in schema["anyOf"] if o.get("type") != "null"]
            schema = options[0]
        else:
            return schema


def _operations() -> list[Operation]:
    endpoints = {e.operation_id: e for e in default_endpoints()}
    found = []
    for path, item in DOCUMENT["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {})
            media_type, body = next(iter(content.items()), (None, None))
            security = {name for requirement in op.get("security", []) for name in requirement}
            endpoint = endpoints[op["operationId"]]
            found.append(
                Operation(
                    endpoint=endpoint,
                    operation_id=op["operationId"],
                    method=method.upper(),
                    path=path,
                    tag=op["tags"][0],
                    path_ids=tuple(p["name"] for p in op.get("parameters", []) if p["in"] == "path"),
                    query=tuple(p["name"] for p in op.get("parameters", []) if p["in"] == "query"),
                    query_times=tuple(
                        p["name"]
                        for p in op.get("parameters", [])
                        if p["in"] == "query" and _resolve(p["schema"]).get("format") == "date-time"
                    ),
                    body_media_type=media_type,
                    body_schema=_resolve(body["schema"]) if body and "$ref" in body["schema"] else None,
                    bearer="bearerAuth" in security,
                    webhook=bool(security - {"bearerAuth"}),
                )
            )
    return found


OPERATIONS = _operations()


# --- bodies built from the schema ---------------------------------------------------------------------


def placeholder(schema: dict[str, Any]) -> Any:
    """A value its schema accepts: the minimal one of its type (an object's required properties)."""
    schema = _resolve(schema)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "examples" in schema:
        return schema["examples"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: placeholder(properties[name]) for name in schema.get("required", [])}
    if kind == "array":
        return [placeholder(schema["items"]) for _ in range(schema.get("minItems", 0))]
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return False
    if kind == "string":
        formatted = {
            "email": "hostile@example.org",
            "date": "2000-01-01",
            "date-time": "2030-01-01T00:00:00Z",
        }
        # Plain text that later checks take too (a password's strength, a reason's length).
        text = TEXT[: schema.get("maxLength", len(TEXT))].ljust(schema.get("minLength", 1), "x")
        return formatted.get(schema.get("format", ""), text)
    raise AssertionError(f"no placeholder for {schema}")


def minimal_body(op: Operation) -> dict[str, Any]:
    """The required properties of the body, placeholders each; if the model refuses that (a rule
    across fields: "exactly one of", "at least one"), with the first optional property that makes it
    valid. The body as sent may still be refused for what it names (an id nobody has)."""
    assert op.body_schema is not None
    assert op.endpoint.request is not None
    body = placeholder(op.body_schema)
    candidates = [body] + [
        {**body, name: placeholder(prop)}
        for name, prop in op.body_schema.get("properties", {}).items()
        if name not in body
    ]
    for candidate in candidates:
        try:
            op.endpoint.request.model_validate_json(json.dumps(candidate))
        except ValidationError:
            continue
        return candidate  # type: ignore[no-any-return]
    raise AssertionError(f"{op.operation_id}: no valid body from the schema; give placeholder() a hint")


Location = tuple[str | int, ...]


def string_fields(schema: dict[str, Any], at: Location = ()) -> Iterator[tuple[Location, dict[str, Any]]]:
    """Every string a body can hold (enums and formats included), optional ones and those in nested
    objects and arrays too: where it is (property names, 0 for an array's first item) and its schema."""
    for name, prop in schema.get("properties", {}).items():
        inner = _resolve(prop)
        loc: Location = (*at, name)
        if inner.get("type") == "array":
            inner, loc = _resolve(inner["items"]), (*loc, 0)
        if inner.get("type") == "string" and inner.get("format") != "binary":
            yield loc, inner
        elif inner.get("type") == "object" and len(loc) < 6:
            yield from string_fields(inner, loc)


def field_of(loc: Location) -> str:
    """How the errors name a location: ``externalMembers[0].name``."""
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc))


def put(body: dict[str, Any], schema: dict[str, Any], loc: Location, value: Any) -> None:
    """Set ``value`` at ``loc`` in ``body``, making the objects and arrays on the way from the schema."""
    node: Any = body
    for key in loc[:-1]:
        schema = _resolve(schema["items"] if isinstance(key, int) else schema["properties"][key])
        if isinstance(key, int):
            node.extend(placeholder(schema) for _ in range(key + 1 - len(node)))
        elif key not in node:
            node[key] = placeholder(schema)
        node = node[key]
    if isinstance(loc[-1], int):
        node.extend(None for _ in range(loc[-1] + 1 - len(node)))
    node[loc[-1]] = value


def with_character(value: str, character: str) -> str:
    return value[:1] + character + value[1:]


def nested(depth: int) -> str:
    return '{"hostile": ' + "[" * depth + "]" * depth + "}"


# --- the cases ------------------------------------------------------------------------------------------


def _marks(operation: Operation, case: str) -> list[pytest.MarkDecorator]:
    reason = KNOWN_DEFECTS.get((operation.operation_id, case))
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


def _skip_body(operation: Operation) -> str | None:
    if operation.webhook:
        return SKIP_BODY["webhook"]
    if operation.body_media_type != "application/json":
        return SKIP_BODY.get(operation.body_media_type or "", f"a {operation.body_media_type} body")
    return None


def _named_value_cases(
    names: Callable[[Operation], tuple[str, ...]], values: dict[str, str]
) -> Iterator[Any]:
    """(operation, name, value) for every operation, every name ``names`` gives it (its path ids, its
    time parameters) and every labelled value."""
    for op in OPERATIONS:
        for name in names(op):
            for label, raw in values.items():
                case = f"{name}-{label}"
                yield pytest.param(op, name, raw, id=f"{op.operation_id}-{case}", marks=_marks(op, case))


def _path_id_cases() -> Iterator[Any]:
    return _named_value_cases(lambda op: op.path_ids, HOSTILE_IDS)


def _query_cases() -> Iterator[Any]:
    for op in OPERATIONS:
        for name in op.query:
            case = f"query-{name}"
            yield pytest.param(op, name, id=f"{op.operation_id}-{case}", marks=_marks(op, case))


def _query_operations() -> Iterator[Any]:
    for op in OPERATIONS:
        if op.query:
            yield pytest.param(op, id=op.operation_id, marks=_marks(op, "unknown-query-parameter"))


def _body_operations() -> Iterator[Any]:
    for op in OPERATIONS:
        if op.body_media_type is None:
            continue
        skip = _skip_body(op)
        marks = [pytest.mark.skip(reason=skip)] if skip else _marks(op, "nested")
        yield pytest.param(op, id=op.operation_id, marks=marks)


def _string_cases() -> Iterator[Any]:
    for op in OPERATIONS:
        if op.body_schema is None or _skip_body(op):
            continue
        for loc, schema in string_fields(op.body_schema):
            for label, character in HOSTILE_CHARACTERS.items():
                case = f"{label}-{field_of(loc)}"
                yield pytest.param(
                    op,
                    loc,
                    with_character(placeholder(schema), character),
                    character,
                    id=f"{op.operation_id}-{case}",
                    marks=_marks(op, case),
                )


def _time_query_cases() -> Iterator[Any]:
    return _named_value_cases(lambda op: op.query_times, EDGE_TIMES)


def _time_body_cases() -> Iterator[Any]:
    for op in OPERATIONS:
        if op.body_schema is None or _skip_body(op):
            continue
        for loc, schema in string_fields(op.body_schema):
            if schema.get("format") != "date-time":
                continue
            for label, raw in EDGE_TIMES.items():
                case = f"{field_of(loc)}-{label}"
                yield pytest.param(op, loc, raw, id=f"{op.operation_id}-{case}", marks=_marks(op, case))


def _multipart_operations() -> Iterator[Any]:
    for op in OPERATIONS:
        if op.body_media_type == "multipart/form-data":
            yield pytest.param(op, id=op.operation_id, marks=_marks(op, "broken-multipart"))


# --- fixtures and helpers ------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def callers(module_api: SharedApp) -> dict[str, Person]:
    """An administrator and a compliance officer of a fresh organization, for the whole module."""
    api = await module_api.started()
    org = await api.organization()
    return {role: await api.person(role, org) for role in ("admin", "compliance_officer")}


@dataclass
class Answer:
    status: int
    content_type: str
    text: str
    body: Any
    logs: list[dict[str, Any]]


async def ask(api: Api, op: Operation, who: Person, url: str, data: str | FormData | None = None) -> Answer:
    """One request as ``who`` (if the operation takes a bearer token), its logs captured."""
    headers = {"X-Request-ID": new_request_id()}
    if op.bearer:
        headers.update(who.auth)
    if isinstance(data, str):
        headers["Content-Type"] = "application/json"
    with capture_logs() as logs:
        resp = await api.client.request(op.method, url, data=data, headers=headers)
        text = await resp.text()
    body = json.loads(text) if resp.content_type.endswith("json") and text else None
    answered = [e for e in logs if e.get("event") == "http.request"]
    assert answered, "the request was not logged"
    assert answered[-1]["request_id"] == headers["X-Request-ID"]
    return Answer(resp.status, resp.headers.get("Content-Type", ""), text, body, logs)


async def ask_with_field(
    api: Api, db: asyncpg.Connection, who: Person, op: Operation, loc: Location, value: str
) -> tuple[Answer, bool]:
    """The operation's minimal valid body with ``value`` at ``loc``, sent as ``who``; the answer, and
    whether any table but the audit trail's changed."""
    assert op.body_schema is not None
    body = minimal_body(op)
    put(body, op.body_schema, loc, value)
    before = await row_counts(db)
    answer = await ask(api, op, who, op.url(), json.dumps(body))
    return answer, await row_counts(db) != before


def valid_body(op: Operation) -> str | FormData | None:
    """A body that is no reason to refuse the request (or none, for an operation without one)."""
    if op.body_media_type == "multipart/form-data":
        assert op.body_schema is not None
        form = FormData()
        for name in op.body_schema.get("required", []):
            form.add_field(name, b"%PDF-1.7\n%%EOF\n", filename="hostile.pdf", content_type="application/pdf")
        return form
    return None if op.body_schema is None or _skip_body(op) else json.dumps(minimal_body(op))


def echoed(answer: Answer, value: str) -> bool:
    """Whether the answer's body repeats ``value`` (its request id, which the test chose, aside)."""
    body = {k: v for k, v in answer.body.items() if k != "requestId"}
    return any(value in text for text in _strings(body))


def assert_refused(answer: Answer) -> None:
    assert 400 <= answer.status < 500, (answer.status, answer.text)
    assert answer.content_type.startswith(PROBLEM_JSON), answer.content_type
    assert answer.body["status"] == answer.status


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _strings(v)
    elif value is not None and not isinstance(value, (int, float, bool)):
        yield str(value)


async def row_counts(db: asyncpg.Connection) -> dict[str, int]:
    """Rows of every table but the audit trail's, which records refusals too. (Nothing else writes
    while a test of this module runs: it sends no message, so the outbox stays as it is.)"""
    tables = await db.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename NOT LIKE 'audit%' AND tablename <> 'alembic_version' ORDER BY 1"
    )
    union = " UNION ALL ".join(f"SELECT '{t[0]}', count(*) FROM {t[0]}" for t in tables)
    return dict(await db.fetch(union))


# --- the tests ------------------------------------------------------------------------------------------


async def test_the_cases_cover_the_table_the_app_serves(api: Api) -> None:
    served = api.app[endpoints_key]

    assert sorted((e.method, e.path, e.operation_id) for e in served) == sorted(
        (o.method, o.path, o.operation_id) for o in OPERATIONS
    )
    assert any(o.path_ids for o in OPERATIONS)
    assert any(o.body_schema for o in OPERATIONS)


@pytest.mark.parametrize(
    "op",
    [pytest.param(o, id=o.operation_id) for o in OPERATIONS if o.body_schema and not _skip_body(o)],
)
def test_the_body_built_from_the_schema_is_a_valid_one(op: Operation) -> None:
    """Otherwise a hostile string could be refused for another field, and would prove nothing."""
    assert op.endpoint.request is not None

    op.endpoint.request.model_validate_json(json.dumps(minimal_body(op)))


@pytest.mark.parametrize(("op", "name", "raw"), list(_path_id_cases()))
async def test_a_hostile_path_id_is_a_4xx_problem_naming_it(
    api: Api, callers: dict[str, Person], op: Operation, name: str, raw: str
) -> None:
    answer = await ask(api, op, callers[op.role], op.url(**{name: raw}), valid_body(op))

    assert_refused(answer)
    assert field_names(answer.body) == [name]
    assert not echoed(answer, unquote(raw))


@pytest.mark.parametrize(("op", "name"), list(_query_cases()))
async def test_a_nul_in_a_query_parameter_is_a_4xx_problem_naming_it(
    api: Api, callers: dict[str, Person], op: Operation, name: str
) -> None:
    answer = await ask(api, op, callers[op.role], f"{op.url()}?{name}=1%00", valid_body(op))

    assert_refused(answer)
    if answer.status == 422:
        assert field_names(answer.body) == [name], answer.body
    assert not echoed(answer, "\u0000")
    assert not [s for s in _strings(answer.logs) if "\u0000" in s]


@pytest.mark.parametrize("op", list(_query_operations()))
async def test_an_unknown_query_parameter_with_a_hostile_name_is_refused_without_repeating_it(
    api: Api, callers: dict[str, Person], op: Operation
) -> None:
    answer = await ask(api, op, callers[op.role], f"{op.url()}?{quote(HOSTILE_KEY)}=1", valid_body(op))

    assert_refused(answer)
    if answer.status == 422:
        assert field_names(answer.body) == ["query"], answer.body
    assert not echoed(answer, HOSTILE_KEY.strip("\u0000"))
    assert not [s for s in _strings(answer.logs) if "\u0000" in s]


@pytest.mark.parametrize("op", list(_body_operations()))
async def test_an_unknown_property_with_a_hostile_name_is_refused_without_repeating_it(
    api: Api, callers: dict[str, Person], op: Operation
) -> None:
    body = {**minimal_body(op), HOSTILE_KEY: 1}

    answer = await ask(api, op, callers[op.role], op.url(), json.dumps(body))

    assert_refused(answer)
    if answer.status == 422:
        assert field_names(answer.body) == ["body"], answer.body
    assert not echoed(answer, HOSTILE_KEY.strip("\u0000"))
    assert not [s for s in _strings(answer.logs) if "\u0000" in s]


@pytest.mark.parametrize("op", list(_body_operations()))
async def test_a_body_nested_a_thousand_deep_is_a_400_naming_the_body(
    api: Api, callers: dict[str, Person], op: Operation
) -> None:
    answer = await ask(api, op, callers[op.role], op.url(), nested(1_000))

    assert answer.status == 400, answer.text
    assert_refused(answer)
    assert field_names(answer.body) == ["body"]
    assert answer.body["errors"][0]["type"] == "json_too_deep"


@pytest.mark.parametrize(("op", "loc", "hostile", "character"), list(_string_cases()))
async def test_a_hostile_character_in_any_string_is_refused_naming_it_and_writes_nothing(
    api: Api,
    db: asyncpg.Connection,
    callers: dict[str, Person],
    op: Operation,
    loc: Location,
    hostile: str,
    character: str,
) -> None:
    answer, wrote = await ask_with_field(api, db, callers[op.role], op, loc, hostile)

    assert_refused(answer)
    if answer.status == 422:  # the rest of the body is valid (see above): only this field is named
        assert field_names(answer.body) == [field_of(loc)], answer.body
    assert not wrote
    assert not echoed(answer, hostile)
    assert not echoed(answer, character)
    assert not [s for s in _strings(answer.logs) if character in s]


async def test_a_lone_surrogate_in_a_property_name_names_the_object_holding_it(
    api: Api, callers: dict[str, Person]
) -> None:
    body = {"patientId": 1, "purpose": "treatment", "externalParty": {"name\ud800": "x"}}

    status, answer = await api.call(
        "POST",
        "/api/consents",
        callers["compliance_officer"],
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )

    assert status == 422, answer
    assert answer["errors"] == [
        {"field": "externalParty", "message": "Must be Unicode text.", "type": "string_unicode"}
    ]


@pytest.mark.parametrize(("op", "name", "raw"), list(_time_query_cases()))
async def test_a_time_at_the_calendars_edge_in_a_query_is_a_422_naming_it(
    api: Api, callers: dict[str, Person], op: Operation, name: str, raw: str
) -> None:
    answer = await ask(api, op, callers[op.role], f"{op.url()}?{name}={quote(raw)}", valid_body(op))

    assert answer.status == 422, answer.text
    assert_refused(answer)
    assert field_names(answer.body) == [name], answer.body


@pytest.mark.parametrize(("op", "loc", "raw"), list(_time_body_cases()))
async def test_a_time_at_the_calendars_edge_in_a_body_is_a_422_naming_it_and_writes_nothing(
    api: Api, db: asyncpg.Connection, callers: dict[str, Person], op: Operation, loc: Location, raw: str
) -> None:
    answer, wrote = await ask_with_field(api, db, callers[op.role], op, loc, raw)

    assert answer.status == 422, answer.text
    assert_refused(answer)
    assert field_names(answer.body) == [field_of(loc)], answer.body
    assert not wrote


def test_there_are_times_to_take_to_the_edge() -> None:
    """The two tests above are generated from the document: they must find something to test."""
    assert list(_time_query_cases())
    assert list(_time_body_cases())
    assert list(_multipart_operations())


@pytest.mark.parametrize("op", list(_multipart_operations()))
async def test_a_multipart_part_whose_headers_are_no_headers_is_a_400_and_writes_nothing(
    api: Api, db: asyncpg.Connection, callers: dict[str, Person], op: Operation
) -> None:
    before = await row_counts(db)
    headers = {**callers[op.role].auth, "Content-Type": "multipart/form-data; boundary=b0undary"}

    resp = await api.client.request(op.method, op.url(), data=BROKEN_MULTIPART, headers=headers)

    assert resp.status == 400, await resp.text()
    assert resp.content_type == PROBLEM_JSON
    assert await row_counts(db) == before
