"""The OpenAPI document agrees with the running app: the same routes, the same security, schemas
that resolve, camelCase field names and problem+json errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.api import Api

PUBLIC_OPERATIONS = {"register", "login"}
# Webhooks from the chat and SMS providers carry a signature instead of a bearer token.
SIGNED_PATH_PREFIX = "/api/webhooks/"
# Operations endpoints (handlers/metrics.py) are for operators, not API clients.
NOT_DOCUMENTED = {"openapi", "health", "ready", "metrics"}
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture
async def document(api: Api) -> dict[str, Any]:
    status, body = await api.call("GET", "/api/openapi.json")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    name = schema["$ref"].removeprefix("#/components/schemas/")
    return document["components"]["schemas"][name]  # type: ignore[no-any-return]


async def test_the_document_is_public_and_is_openapi_3_1(api: Api) -> None:
    resp = await api.client.get("/api/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["openapi"].startswith("3.1.")
    assert body["info"]["title"] == "caremsg"
    assert body["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }


async def test_every_route_of_the_app_is_documented_with_its_method_and_path_and_nothing_else_is(
    api: Api, document: dict[str, Any]
) -> None:
    routed = {
        (route.method, route.resource.canonical)
        for route in api.app.router.routes()
        if route.method != "HEAD" and route.name not in NOT_DOCUMENTED and route.resource is not None
    }
    documented = {(method, path) for method, path, _ in operations(document)}

    assert routed == documented
    assert ("POST", "/api/conversations/send-message") in documented
    assert ("GET", "/api/conversations/{id}") in documented


async def test_operation_ids_are_unique_and_name_the_routes(api: Api, document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    names = {route.name for route in api.app.router.routes() if route.method != "HEAD"}
    assert set(ids) <= names


async def test_every_operation_but_register_and_login_requires_a_bearer_token(
    document: dict[str, Any],
) -> None:
    for method, path, op in operations(document):
        if op["operationId"] in PUBLIC_OPERATIONS or path.startswith(SIGNED_PATH_PREFIX):
            assert "security" not in op, (method, path)
        else:
            assert op.get("security") == [{"bearerAuth": []}], (method, path)
            assert "401" in op["responses"], (method, path)
            assert "403" in op["responses"], (method, path)


async def test_the_documented_security_is_what_the_app_enforces(api: Api, document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        if path.startswith(SIGNED_PATH_PREFIX):
            continue
        concrete = re.sub(r"{\w+}", "1", path)
        status, body = await api.call(method, concrete, json={} if "requestBody" in op else None)
        if op["operationId"] in PUBLIC_OPERATIONS:
            assert status != 401, (method, path, body)
        else:
            assert status == 401, (method, path, body)


async def test_every_operation_documents_success_and_problem_json_errors(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        responses = op["responses"]
        successes = [code for code in responses if code.startswith("2")]
        assert len(successes) == 1, (method, path)
        success = responses[successes[0]]
        assert set(success.get("content", {})) <= {"application/json"}, (method, path)
        errors = {code: r for code, r in responses.items() if code[0] in "45"}
        assert any(code.startswith("4") for code in errors), (method, path)
        assert "500" in errors, (method, path)
        for code, response in errors.items():
            assert response["description"], (method, path, code)
            assert response["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}, (
                method,
                path,
                code,
            )


async def test_the_conversation_operations_document_their_status_codes(document: dict[str, Any]) -> None:
    paths = document["paths"]
    create = paths["/api/conversations"]["post"]
    send = paths["/api/conversations/send-message"]["post"]
    read = paths["/api/conversations/{id}"]["get"]
    assert {"201", "401", "403", "404", "422"} <= set(create["responses"])
    assert {"202", "401", "403", "404", "422"} <= set(send["responses"])
    assert {"200", "401", "403", "404"} <= set(read["responses"])
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ConversationPublic"
    }
    assert send["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MessagePublic"
    }
    assert [p for p in read["parameters"] if p["in"] == "path"] == [
        {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        }
    ]
    [purpose] = [p for p in read["parameters"] if p["in"] == "header"]
    assert (purpose["name"], purpose["required"]) == ("X-Purpose-Of-Use", False)
    assert "treatment" in purpose["schema"]["enum"]


async def test_every_path_parameter_is_declared_and_required(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)
        assert all(p["required"] for p in op.get("parameters", []) if p["in"] == "path"), (method, path)


async def test_every_schema_reference_resolves_in_the_components(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    found = list(refs(document))
    assert found
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    for method, path, op in operations(document):
        if "requestBody" in op:
            assert op["requestBody"]["required"] is True, (method, path)
            assert resolve(document, op["requestBody"]["content"]["application/json"]["schema"])
        for response in op["responses"].values():
            for content in response.get("content", {}).values():
                assert resolve(document, content["schema"]), (method, path)


async def test_request_schemas_name_their_fields_and_required_fields_in_camel_case(
    document: dict[str, Any],
) -> None:
    seen: set[str] = set()
    pending = [
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        for _, _, op in operations(document)
        if "requestBody" in op
    ]
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        schema = resolve(document, {"$ref": ref})
        if schema.get("type") != "object":
            continue
        assert all(CAMEL.fullmatch(name) for name in schema["properties"]), (ref, schema["properties"])
        assert set(schema.get("required", [])) <= set(schema["properties"]), ref
        assert schema.get("additionalProperties") is False, ref
        pending.extend(refs(schema))
    assert "#/components/schemas/ExternalMemberCreate" in seen


@pytest.mark.parametrize(
    ("schema", "required"),
    [
        pytest.param("ConversationCreate", {"title", "patientId"}, id="ConversationCreate"),
        pytest.param("SendMessageRequest", {"conversationId", "message"}, id="SendMessageRequest"),
        pytest.param("ExternalMemberCreate", {"phoneNumber", "name"}, id="ExternalMemberCreate"),
        pytest.param("RegisterRequest", {"email", "password", "firstName", "lastName"}, id="RegisterRequest"),
        pytest.param("ConsentCreate", {"patientId", "purpose"}, id="ConsentCreate"),
    ],
)
async def test_request_schemas_require_exactly_the_fields_a_client_must_send(
    document: dict[str, Any], schema: str, required: set[str]
) -> None:
    assert set(document["components"]["schemas"][schema]["required"]) == required


async def test_the_conversation_schemas_carry_the_limits_the_api_enforces(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    create = schemas["ConversationCreate"]["properties"]
    assert create["title"]["maxLength"] >= 1
    assert create["memberIds"]["type"] == "array"
    assert create["memberIds"]["items"]["type"] == "integer"
    assert create["memberIds"]["maxItems"] >= 1
    assert create["externalMembers"]["maxItems"] >= 1
    message = schemas["SendMessageRequest"]["properties"]["message"]
    assert (message["minLength"], message["maxLength"]) == (1, 4000)
    public = schemas["ConversationPublic"]["properties"]
    assert set(public) >= {
        "id",
        "title",
        "patientId",
        "channelUrl",
        "channelState",
        "memberIds",
        "externalMembers",
        "createdBy",
        "createdAt",
    }
    assert public["channelState"]["enum"] == ["pending", "ready", "failed"]
