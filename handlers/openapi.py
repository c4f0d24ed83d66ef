"""The OpenAPI 3.1 document, generated from the same endpoint table that builds the router and from
the contracts the installed middlewares and helpers declare (``handlers.routing.Contract``).

Each operation gets: its path, query and header parameters; its success with the headers any
contract puts on it; every error status it raises itself (``Endpoint.errors``) or a contract that
applies to it may answer with, each with its headers. Nothing here lists a status or header by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from engine.model import Purpose
from handlers.routing import Contract, Endpoint, Header
from handlers.schemas import Problem

_REF = "#/components/schemas/{model}"
_PROBLEM = {"application/problem+json": {"schema": {"$ref": _REF.format(model="Problem")}}}
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No content",
    400: "Malformed request: the body is not JSON, or not of the expected kind",
    401: "Not authenticated",
    403: "Denied by the policy (reason, hint and rule in the body)",
    404: "Not found (or not visible to the caller)",
    409: "Conflicts with existing state",
    422: "Invalid field (the errors name each field)",
    429: "Rate limited or login backing off; retry after the Retry-After header's seconds",
    503: "A dependency is unavailable; retry later",
}

#: Top-level tags, in the order a reader meets them.
TAGS: dict[str, str] = {
    "auth": "Registration, login and the caller's profile.",
    "users": "Accounts of one's organization (administrators).",
    "organizations": "Organizations: the unit of tenancy.",
    "compliance": "Compliance groups: organizations that share patients under consent.",
    "consents": "A patient's consents: recording, listing and revoking disclosures.",
    "patients": "Patient records.",
    "care-teams": "The care team around each patient.",
    "conversations": "Conversations about a patient, messages and their delivery.",
    "break-glass": "Emergency access to a patient, with a reason, reviewed afterwards.",
    "audit": "The audit trail and a patient's accounting of disclosures.",
    "retention": "Legal holds: content the retention sweep (policies/retention.toml) must keep.",
    "policy": "The policy in force and its live reload.",
    "webhooks": "Events the chat and SMS providers post to caremsg, signed.",
    "service": "Health, readiness, metrics and this document.",
}

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "twilioSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Twilio-Signature",
        "description": "Base64 HMAC-SHA1, keyed with the Twilio Auth Token, of the webhook URL followed by "
        "the POST parameters sorted by name.",
    },
    "webhookSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "x-sendbird-signature",
        "description": "Lowercase hex HMAC-SHA256 of the raw request body, keyed with the Sendbird "
        "master API token. Checked before the body is read as JSON.",
    },
}


def build_openapi(
    endpoints: list[Endpoint], *, version: str, contracts: Iterable[Contract] = ()
) -> dict[str, Any]:
    """The whole document: ``contracts`` are those of the installed middlewares, in order."""
    middleware_contracts = list(contracts)
    models: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization")]
    for ep in endpoints:
        if ep.request is not None:
            models.append((ep.request, "validation"))
        models.extend((model, "validation") for _, model in ep.events)
        if ep.response is not None:
            models.append((ep.response, "serialization"))
    keys, defs = models_json_schema(models, by_alias=True, ref_template=_REF)
    schemas: dict[str, Any] = defs.get("$defs", {})
    schemas.setdefault("Purpose", TypeAdapter(Purpose).json_schema())

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return dict(keys[(model, mode)])  # type: ignore[index]

    paths: dict[str, dict[str, Any]] = {}
    webhooks: dict[str, dict[str, Any]] = {}
    response_headers: list[Header] = []
    for ep in endpoints:
        applying = [c for c in (*middleware_contracts, *ep.contracts) if c.applies(ep)]
        for c in applying:
            response_headers += [*c.response_headers, *c.success_headers]
            response_headers += [h for s in c.statuses for h in s.headers]
        op = _operation(ep, applying, ref)
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
        for name, model in ep.events:
            event_op = {k: v for k, v in op.items() if k not in {"operationId", "parameters"}}
            event_op["summary"] = (model.__doc__ or name).strip().splitlines()[0]
            event_op["description"] = f"Posted to `{ep.path}`. {ep.description}".strip()
            event_op["requestBody"] = {
                "required": True,
                "content": {ep.request_media_type: {"schema": ref(model, "validation")}},
            }
            webhooks[name] = {ep.method.lower(): event_op}
    used_tags = {op["tags"][0] for item in paths.values() for op in item.values()}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "caremsg",
            "version": version,
            "description": "Secure messaging for healthcare teams. Every action is decided by the policy "
            "engine; a denial is a 403 problem+json naming the reason and what is missing. Every error "
            "is RFC 9457 problem+json with a stable `code` and the request id.",
        },
        "servers": [{"url": "/", "description": "The caremsg instance serving this document."}],
        "tags": [{"name": name, "description": text} for name, text in TAGS.items() if name in used_tags],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "headers": _header_components(paths, response_headers),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
    if webhooks:
        document["webhooks"] = webhooks
    return document


def _operation(ep: Endpoint, contracts: list[Contract], ref: Any) -> dict[str, Any]:
    everywhere = _unique(h for c in contracts for h in c.response_headers)
    success_headers = _unique([*everywhere, *(h for c in contracts for h in c.success_headers)])
    success: dict[str, Any] = {"description": _STATUS_TEXT.get(ep.status, "OK")}
    if success_headers:
        success["headers"] = _headers(success_headers)
    if ep.status == 204:
        pass  # No Content: no body, no media type
    elif ep.response is not None:
        schema = ref(ep.response, "serialization")
        success["content"] = {ep.media_type: {"schema": schema}}
    else:
        kind = "object" if ep.media_type == "application/json" else "string"
        success["content"] = {ep.media_type: {"schema": {"type": kind}}}
    op: dict[str, Any] = {
        "operationId": ep.operation_id,
        "summary": ep.summary,
        "tags": [ep.tag],
        "responses": {str(ep.status): success},
    }
    if ep.description:
        op["description"] = ep.description
    params = _parameters(ep, contracts)
    if params:
        op["parameters"] = params
    if ep.events:
        op["requestBody"] = {
            "required": True,
            "content": {
                ep.request_media_type: {"schema": _one_of([ref(m, "validation") for _, m in ep.events])}
            },
        }
    elif ep.request is not None:
        op["requestBody"] = {
            "required": True,
            "content": {ep.request_media_type: {"schema": ref(ep.request, "validation")}},
        }
    if ep.security is not None:
        op["security"] = [{ep.security: []}]
    elif not ep.public:
        op["security"] = [{"bearerAuth": []}]
    own_bodies = dict(ep.error_bodies)
    for status, (descriptions, headers) in sorted(_errors(ep, contracts).items()):
        content = (
            {"application/json": {"schema": ref(own_bodies[status], "serialization")}}
            if status in own_bodies
            else _PROBLEM
        )
        response: dict[str, Any] = {"description": "; or ".join(descriptions), "content": content}
        all_headers = _unique([*everywhere, *headers])
        if all_headers:
            response["headers"] = _headers(all_headers)
        op["responses"][str(status)] = response
    return op


def _one_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    return schemas[0] if len(schemas) == 1 else {"oneOf": schemas}


def _errors(ep: Endpoint, contracts: list[Contract]) -> dict[int, tuple[list[str], list[Header]]]:
    """Every error status of the operation: its own, then each applying contract's, merged."""
    found: dict[int, tuple[list[str], list[Header]]] = {}
    for status in ep.errors:
        found[status] = ([_STATUS_TEXT.get(status, "Error")], [])
    for contract in contracts:
        for s in contract.statuses:
            descriptions, headers = found.setdefault(s.status, ([], []))
            if s.description not in descriptions:
                descriptions.append(s.description)
            headers.extend(s.headers)
    return found


def _parameters(ep: Endpoint, contracts: list[Contract]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        }
        for name in re.findall(r"{(\w+)}", ep.path)
    ]
    if ep.query is not None:
        # Each parameter's own schema (not every query parameter is an integer id); an enum it
        # names (Purpose) is referenced from the components, as in bodies.
        properties = ep.query.model_json_schema(by_alias=True, ref_template=_REF)["properties"]
        for name, field in ep.query.model_fields.items():
            alias = field.alias or name
            schema = properties.get(alias, {"type": "string"})
            param: dict[str, Any] = {
                "name": alias,
                "in": "query",
                "required": False,
                "schema": _query_schema(schema),
            }
            if field.description:
                param["description"] = field.description
            params.append(param)
    for header in _unique(h for c in contracts for h in c.request_headers):
        params.append(
            {
                "name": header.name,
                "in": "header",
                "required": header.required,
                "description": header.description,
                "schema": dict(header.schema),
            }
        )
    return params


def _headers(headers: list[Header]) -> dict[str, Any]:
    """Response headers as references to ``components/headers`` (one definition per header)."""
    return {h.name: {"$ref": f"#/components/headers/{h.name}"} for h in headers}


def _header_components(paths: dict[str, Any], declared: list[Header]) -> dict[str, Any]:
    used = {
        name
        for item in paths.values()
        for op in item.values()
        for response in op["responses"].values()
        for name in response.get("headers", {})
    }
    return {
        h.name: {"description": h.description, "required": h.required, "schema": dict(h.schema)}
        for h in _unique(declared)
        if h.name in used
    }


def _unique(headers: Iterable[Header]) -> list[Header]:
    seen: dict[str, Header] = {}
    for h in headers:
        seen.setdefault(h.name.lower(), h)
    return list(seen.values())


def _query_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without pydantic's "or null" (an absent parameter is the null)."""
    options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
    inner = options[0] if len(options) == 1 else schema
    return {k: v for k, v in inner.items() if k not in {"title", "default", "anyOf", "description"}} or {
        "type": "string"
    }
