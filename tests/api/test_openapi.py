"""The OpenAPI document agrees with the running app: the same routes, the same security, schemas
that resolve, camelCase field names and problem+json errors; every status and header the app
sends for an operation is declared on it; and the reference at /api/docs renders it offline.

Longer than 400 lines because every test compares the one served document with the one running app
through the same helpers (``operations``, ``refs``, ``resolve``); split by concern, each part would
need its own copy of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from handlers.keys import endpoints_key, settings_key
from handlers.routing import contracts_of
from tests.support.api import Api

# getMetrics checks a token of its own (service.metrics_token), not an access token; unset here.
PUBLIC_OPERATIONS = {
    "register",
    "login",
    "getOpenApiDocument",
    "getApiReference",
    "getHealth",
    "getReadiness",
    "getMetrics",
}
#: Errors answered with a body of their own, not problem+json: the readiness report.
OWN_ERROR_BODIES = {
    ("/ready", "503"): {"application/json": {"schema": {"$ref": "#/components/schemas/ReadinessPublic"}}}
}
# Webhooks from the chat and SMS providers carry a signature instead of a bearer token.
SIGNED_PATH_PREFIX = "/api/webhooks/"
# The reference's static files are not API operations.
NOT_DOCUMENTED = {"docs-start", "docs-assets"}
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
        if route.method != "HEAD"
        and route.name not in NOT_DOCUMENTED
        and not (route.name or "").startswith("console-")  # the web console's pages: HTML, not API
        and route.resource is not None
    }
    documented = {(method, path) for method, path, _ in operations(document)}

    assert routed == documented
    assert ("POST", "/api/conversations/send-message") in documented
    assert ("GET", "/api/conversations/{id}") in documented
    assert {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")} <= documented


async def test_readiness_documents_its_own_503_body_not_a_problem(document: dict[str, Any]) -> None:
    ready = document["paths"]["/ready"]["get"]["responses"]
    schema = {"$ref": "#/components/schemas/ReadinessPublic"}

    assert ready["200"]["content"]["application/json"]["schema"] == schema
    assert ready["503"]["content"] == {"application/json": {"schema": schema}}
    assert "429" not in ready  # operations probes are never rate limited


async def test_operation_ids_are_unique_and_name_the_routes(api: Api, document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    names = {route.name for route in api.app.router.routes() if route.method != "HEAD"}
    assert set(ids) <= names


async def test_every_operation_but_register_and_login_requires_a_bearer_token(
    document: dict[str, Any],
) -> None:
    for method, path, op in operations(document):
        if op["operationId"] in PUBLIC_OPERATIONS:
            assert "security" not in op, (method, path)
        elif path.startswith(SIGNED_PATH_PREFIX):
            assert op["security"] in ([{"webhookSignature": []}], [{"twilioSignature": []}]), (method, path)
        else:
            assert op.get("security") == [{"bearerAuth": []}], (method, path)
            assert "401" in op["responses"], (method, path)
            assert "403" in op["responses"], (method, path)


async def test_the_documented_security_is_what_the_app_enforces(api: Api, document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        if path.startswith(SIGNED_PATH_PREFIX):
            continue
        concrete = re.sub(r"{\w+}", "1", path)
        async with api.client.request(method, concrete, json={} if "requestBody" in op else None) as resp:
            status = resp.status
        if op["operationId"] in PUBLIC_OPERATIONS:
            assert status != 401, (method, path)
        else:
            assert status == 401, (method, path)


async def test_every_operation_documents_success_and_problem_json_errors(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        responses = op["responses"]
        successes = [code for code in responses if code.startswith("2")]
        assert len(successes) == 1, (method, path)
        success = responses[successes[0]]
        assert set(success.get("content", {})) <= {
            "application/json",
            "text/html",
            "text/xml",
            "text/plain",
            "application/octet-stream",  # an attachment's download
        }, (
            method,
            path,
        )
        errors = {code: r for code, r in responses.items() if code[0] in "45"}
        if op["tags"] != ["service"]:  # the document and its reference cannot be asked wrongly
            assert any(code.startswith("4") for code in errors), (method, path)
        assert "500" in errors, (method, path)
        for code, response in errors.items():
            assert response["description"], (method, path, code)
            expected = OWN_ERROR_BODIES.get(
                (path, code), {"application/problem+json": {"schema": PROBLEM_REF}}
            )
            assert response["content"] == expected, (method, path, code)


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
    [purpose] = [p for p in read["parameters"] if p["name"] == "X-Purpose-Of-Use"]
    assert (purpose["in"], purpose["required"]) == ("header", False)
    assert purpose["schema"] == {"$ref": "#/components/schemas/Purpose"}
    assert "treatment" in document["components"]["schemas"]["Purpose"]["enum"]


async def test_every_path_parameter_is_declared_and_required(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)
        assert all(p["required"] for p in op.get("parameters", []) if p["in"] == "path"), (method, path)


async def test_every_reference_resolves_in_the_components(document: dict[str, Any]) -> None:
    found = list(refs(document))
    assert found
    for ref in found:
        kind, _, name = ref.removeprefix("#/components/").partition("/")
        assert ref.startswith("#/components/"), ref
        assert kind in {"schemas", "headers"}, ref
        assert name in document["components"][kind], ref
    for method, path, op in operations(document):
        if "requestBody" in op:
            assert op["requestBody"]["required"] is True, (method, path)
            [body] = [c["schema"] for c in op["requestBody"]["content"].values()]
            for one in body.get("oneOf", [body]):
                assert resolve(document, one)
        for response in op["responses"].values():
            for media, content in response.get("content", {}).items():
                if "$ref" in content["schema"]:
                    assert resolve(document, content["schema"]), (method, path)
                else:
                    assert media != "application/problem+json", (method, path)


async def test_request_schemas_name_their_fields_and_required_fields_in_camel_case(
    document: dict[str, Any],
) -> None:
    seen: set[str] = set()
    # Webhook bodies are the providers' own formats (snake_case); they are tested below.
    pending = [
        content["schema"]["$ref"]
        for _, path, op in operations(document)
        if "requestBody" in op and not path.startswith(SIGNED_PATH_PREFIX)
        for content in op["requestBody"]["content"].values()
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


# --- every status and header the app sends is declared, from the code that sends it -------------------


def declared_headers(response: dict[str, Any]) -> set[str]:
    return {name.lower() for name in response.get("headers", {})}


async def test_every_installed_middleware_and_response_hook_declares_what_it_adds(api: Api) -> None:
    for middleware in api.app.middlewares:
        assert contracts_of(middleware) is not None, middleware
    for hook in api.app.on_response_prepare:
        assert contracts_of(hook) is not None, hook


async def test_every_response_declares_the_request_id_header_and_every_operation_accepts_one(
    document: dict[str, Any],
) -> None:
    for method, path, op in operations(document):
        assert any(p["name"] == "X-Request-ID" and p["in"] == "header" for p in op["parameters"]), path
        for code, response in op["responses"].items():
            assert "x-request-id" in declared_headers(response), (method, path, code)
            assert response["headers"]["X-Request-ID"] == {"$ref": "#/components/headers/X-Request-ID"}
    assert document["components"]["headers"]["X-Request-ID"]["required"] is True


async def test_every_declared_response_header_is_defined_once_in_the_components(
    document: dict[str, Any],
) -> None:
    headers = document["components"]["headers"]
    for method, path, op in operations(document):
        for code, response in op["responses"].items():
            for name, ref in response.get("headers", {}).items():
                assert ref == {"$ref": f"#/components/headers/{name}"}, (method, path, code)
                assert headers[name]["description"], name
                assert headers[name]["schema"], name


async def test_a_body_too_large_is_a_declared_413_on_every_operation_with_a_body(
    api: Api, document: dict[str, Any]
) -> None:
    org = await api.organization()
    admin = await api.person("admin", org)
    too_large = {"field": "x" * (api.app[settings_key].api.max_body_bytes + 1)}
    with_body = [(m, p, op) for m, p, op in operations(document) if "requestBody" in op]
    assert len(with_body) >= 14
    for method, path, op in with_body:
        assert "413" in op["responses"], (method, path)
        concrete = re.sub(r"{\w+}", "1", path)
        status, _, body = await api.send(method, concrete, admin, json=too_large)
        assert status == 413, (method, path, body)
        assert body["code"] == "payload_too_large"
    for method, path, op in operations(document):
        if "requestBody" not in op:
            assert "413" not in op["responses"], (method, path)


async def test_a_bad_purpose_of_use_is_a_declared_422_on_every_operation_that_reads_the_header(
    api: Api, document: dict[str, Any]
) -> None:
    org = await api.organization()
    admin = await api.person("admin", org)
    readers = [
        (m, p, op)
        for m, p, op in operations(document)
        if any(q["name"] == "X-Purpose-Of-Use" for q in op.get("parameters", []))
    ]
    assert ("GET", "/api/auth/profile") in {(m, p) for m, p, _ in readers}
    for method, path, op in readers:
        assert "422" in op["responses"], (method, path)
        assert "X-Purpose-Of-Use" in op["responses"]["422"]["description"], (method, path)
    status, _, body = await api.send(
        "GET", "/api/auth/profile", admin, headers={"X-Purpose-Of-Use": "curiosity"}
    )
    assert status == 422, body
    assert body["errors"][0]["field"] == "X-Purpose-Of-Use"
    status, _, body = await api.send("GET", "/api/policy", admin, headers={"X-Purpose-Of-Use": "curiosity"})
    assert status == 422, body


async def test_every_401_declares_its_challenge_except_the_signed_webhooks(
    api: Api, document: dict[str, Any]
) -> None:
    for method, path, op in operations(document):
        unauthorized = op["responses"].get("401")
        if unauthorized is None:
            continue
        if path.startswith(SIGNED_PATH_PREFIX):
            assert "www-authenticate" not in declared_headers(unauthorized), path
            assert "access token" not in unauthorized["description"], path
            assert "signature" in unauthorized["description"].lower(), path
        else:
            assert "www-authenticate" in declared_headers(unauthorized), (method, path)
    status, headers, body = await api.send("POST", "/api/webhooks/sendbird", json={"category": "x"})
    assert status == 401, body
    assert "WWW-Authenticate" not in headers
    status, headers, body = await api.send("GET", "/api/auth/profile")
    assert status == 401, body
    assert headers["WWW-Authenticate"].startswith("Bearer")


async def test_the_idempotent_operations_declare_the_key_and_the_replay_header(
    document: dict[str, Any],
) -> None:
    idempotent = (
        "/api/conversations",
        "/api/conversations/send-message",
        "/api/conversations/{id}/attachments",
    )
    for path in idempotent:
        op = document["paths"][path]["post"]
        [key] = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
        assert (key["in"], key["required"]) == ("header", False)
        assert (key["schema"]["minLength"], key["schema"]["maxLength"]) == (1, 255)
        success = next(r for code, r in op["responses"].items() if code.startswith("2"))
        assert "idempotent-replayed" in declared_headers(success)
        assert {"409", "422"} <= set(op["responses"])
    others = [
        (m, p)
        for m, p, op in operations(document)
        if any(q["name"] == "Idempotency-Key" for q in op.get("parameters", []))
    ]
    assert sorted(others) == sorted(("POST", p) for p in idempotent)


async def test_the_503_declares_retry_after(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        assert "retry-after" in declared_headers(op["responses"]["503"]), (method, path)


# --- schemas say what the server enforces; shared enums are references ----------------------------


async def test_purpose_is_one_shared_schema_not_an_inline_copy_per_operation(
    document: dict[str, Any],
) -> None:
    purposes = sorted(document["components"]["schemas"]["Purpose"]["enum"])

    def inline_copies(node: Any) -> int:
        if isinstance(node, dict):
            here = int(sorted(node.get("enum", [])) == purposes)
            return here + sum(inline_copies(v) for v in node.values())
        if isinstance(node, list):
            return sum(inline_copies(v) for v in node)
        return 0

    assert inline_copies(document) == 1


async def test_registration_declares_only_the_roles_it_accepts_and_emails_have_a_format(
    api: Api, document: dict[str, Any]
) -> None:
    schemas = document["components"]["schemas"]
    register = schemas["RegisterRequest"]["properties"]
    assert register["role"]["enum"] == ["care_team_member", "peer_support"]
    for name in ("RegisterRequest", "LoginRequest", "CreateUserRequest"):
        assert schemas[name]["properties"]["email"]["format"] == "email", name
    status, body = await api.call(
        "POST",
        "/api/auth/register",
        json={
            "email": "a@example.org",
            "password": "x" * 12,
            "firstName": "A",
            "lastName": "B",
            "role": "admin",
        },
    )
    assert status == 422, body


async def test_revoked_consent_removed_members_are_a_named_object(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    items = schemas["RevocationPublic"]["properties"]["removedMembers"]["items"]
    assert items == {"$ref": "#/components/schemas/RemovedMemberPublic"}
    member = schemas["RemovedMemberPublic"]
    assert set(member["required"]) == {"conversationId", "userId"}
    assert all(p["description"] for p in member["properties"].values())


async def test_audit_details_are_described_in_camel_case(document: dict[str, Any]) -> None:
    details = document["components"]["schemas"]["AuditEventPublic"]["properties"]["details"]
    assert details["type"] == "object"
    assert details["description"]
    assert {"consentId", "recipientType", "outboxId", "facts"} <= set(details["properties"])
    for name, prop in details["properties"].items():
        assert CAMEL.fullmatch(name), name
        assert prop["description"], name


# --- organisation: tags, servers, webhooks, the service's own endpoints -------------------------------


async def test_every_operation_has_a_described_top_level_tag_and_consents_are_one_tag(
    document: dict[str, Any],
) -> None:
    tags = {t["name"]: t["description"] for t in document["tags"]}
    assert all(tags.values())
    for method, path, op in operations(document):
        assert op["tags"][0] in tags, (method, path)
        if "consent" in op["operationId"].lower():
            assert op["tags"] == ["consents"], (method, path)
    assert document["servers"]


async def test_webhooks_declare_their_bodies_and_signature(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert (schemes["webhookSignature"]["in"], schemes["webhookSignature"]["name"]) == (
        "header",
        "x-sendbird-signature",
    )
    assert (schemes["twilioSignature"]["in"], schemes["twilioSignature"]["name"]) == (
        "header",
        "X-Twilio-Signature",
    )
    sendbird = document["paths"]["/api/webhooks/sendbird"]["post"]
    assert len(sendbird["requestBody"]["content"]["application/json"]["schema"]["oneOf"]) == 2
    twilio = document["paths"]["/api/webhooks/twilio"]["post"]
    form = twilio["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert {"MessageSid", "AccountSid", "From"} <= set(resolve(document, form)["required"])
    assert "text/xml" in twilio["responses"]["200"]["content"]
    events = document["webhooks"]
    assert {"sendbirdMessageSend", "sendbirdMessageRead", "twilioIncomingMessage"} <= set(events)
    for name, item in events.items():
        op = item["post"]
        assert op["security"] in ([{"webhookSignature": []}], [{"twilioSignature": []}]), name
        [body] = [c["schema"] for c in op["requestBody"]["content"].values()]
        assert resolve(document, body), name
        assert "401" in op["responses"], name


async def test_each_request_body_is_declared_in_the_media_type_its_handler_reads(
    api: Api, document: dict[str, Any]
) -> None:
    declared = {
        op["operationId"]: set(op["requestBody"]["content"])
        for _, _, op in operations(document)
        if "requestBody" in op
    }

    assert declared == {
        ep.operation_id: {ep.request_media_type} for ep in api.app[endpoints_key] if ep.reads_body
    }
    assert declared["attachFile"] == {"multipart/form-data"}  # it was documented as a JSON body


async def test_the_document_lists_itself_and_the_api_reference(document: dict[str, Any]) -> None:
    assert document["paths"]["/api/openapi.json"]["get"]["operationId"] == "getOpenApiDocument"
    docs = document["paths"]["/api/docs"]["get"]
    assert "text/html" in docs["responses"]["200"]["content"]


async def test_the_api_reference_is_served_offline_under_a_strict_content_security_policy(api: Api) -> None:
    resp = await api.client.get("/api/docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp
    assert "unsafe-eval" not in csp
    assert "<script>" not in page  # no inline script: every script is a file served from here
    assert "http://" not in page
    assert "https://" not in page
    for src in re.findall(r'(?:src|href)="([^"]+)"', page):
        async with api.client.get(f"/api/{src}") as asset:
            assert asset.status == 200, src
            assert await asset.read(), src
    start = await (await api.client.get("/api/docs/start.js")).text()
    assert 'url: "openapi.json"' in start
    assert "validatorUrl: null" in start  # Swagger UI would otherwise call an online validator


async def test_every_property_of_every_schema_is_described(document: dict[str, Any]) -> None:
    undescribed = [
        f"{name}.{prop}"
        for name, schema in document["components"]["schemas"].items()
        for prop, spec in schema.get("properties", {}).items()
        if not spec.get("description")
    ]
    assert undescribed == [], "add them to handlers/field_docs.py or give them a Field(description=...)"


async def test_a_patient_change_offers_null_only_where_null_is_accepted(document: dict[str, Any]) -> None:
    update = document["components"]["schemas"]["PatientUpdate"]["properties"]
    for name in ("firstName", "lastName", "riskLevel"):
        assert "anyOf" not in update[name], name
        assert "default" not in update[name], name
    assert {"type": "null"} in update["dateOfBirth"]["anyOf"]


async def test_phone_numbers_declare_the_e164_shape(document: dict[str, Any]) -> None:
    for name in ("ExternalParty", "ExternalMemberCreate"):
        phone = document["components"]["schemas"][name]["properties"]["phoneNumber"]
        assert phone["pattern"] == r"^\+[1-9]\d{7,14}$", name
        assert re.fullmatch(phone["pattern"], phone["examples"][0])
