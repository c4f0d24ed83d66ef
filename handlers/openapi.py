"""The OpenAPI 3.1 document, generated from the same endpoint table that builds the router."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from engine.model import Purpose
from handlers.routing import Endpoint
from handlers.schemas import Problem

_REF = "#/components/schemas/{model}"
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No content",
    400: "Malformed request",
    401: "Missing or invalid access token",
    403: "Denied by the policy (reason, hint and rule in the body)",
    404: "Not found",
    409: "Conflicts with existing state",
    422: "Invalid field (the errors name each field)",
    429: "Rate limited or login backing off; retry after the Retry-After header's seconds",
    503: "A dependency is unavailable; retry later",
}


def build_openapi(endpoints: list[Endpoint], *, version: str) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization")]
    for ep in endpoints:
        if ep.request is not None:
            models.append((ep.request, "validation"))
        if ep.response is not None:
            models.append((ep.response, "serialization"))
    keys, defs = models_json_schema(models, by_alias=True, ref_template=_REF)
    schemas = defs.get("$defs", {})

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return dict(keys[(model, mode)])  # type: ignore[index]

    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        op: dict[str, Any] = {
            "operationId": ep.operation_id,
            "summary": ep.summary,
            "tags": [ep.tag],
            "responses": {
                str(ep.status): {
                    "description": _STATUS_TEXT.get(ep.status, "OK"),
                    **(
                        {"content": {"application/json": {"schema": ref(ep.response, "serialization")}}}
                        if ep.response is not None
                        else {}
                    ),
                }
            },
        }
        if ep.description:
            op["description"] = ep.description
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
            }
            for name in re.findall(r"{(\w+)}", ep.path)
        ]
        if ep.query is not None:
            # Each parameter's own schema (not every query parameter is an integer id).
            properties = ep.query.model_json_schema(by_alias=True)["properties"]
            for name, field in ep.query.model_fields.items():
                alias = field.alias or name
                params.append(
                    {
                        "name": alias,
                        "in": "query",
                        "required": False,
                        "schema": _query_schema(properties.get(alias, {"type": "string"})),
                    }
                )
        if params:
            op["parameters"] = params
        if ep.request is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(ep.request, "validation")}},
            }
        if not ep.public:
            op["security"] = [{"bearerAuth": []}]
            op.setdefault("parameters", []).append(
                {
                    "name": "X-Purpose-Of-Use",
                    "in": "header",
                    "required": False,
                    "description": "The purpose of use of this access; recorded in its audit events.",
                    "schema": {"type": "string", "enum": [p.value for p in Purpose]},
                }
            )
        # Every endpoint is rate limited (429); every authenticated operation takes X-Purpose-Of-Use,
        # and an unknown value is a 422 naming it.
        statuses = {*ep.errors, 429, 503} | (set() if ep.public else {422})
        for status in sorted(statuses):
            op["responses"][str(status)] = {
                "description": _STATUS_TEXT.get(status, "Error"),
                "content": {"application/problem+json": {"schema": {"$ref": _REF.format(model="Problem")}}},
            }
        op["responses"]["500"] = {
            "description": "Unexpected error (no details; see the request id)",
            "content": {"application/problem+json": {"schema": {"$ref": _REF.format(model="Problem")}}},
        }
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "caremsg",
            "version": version,
            "description": "Secure messaging for healthcare teams. Every action is decided by the policy "
            "engine; a denial is a 403 problem+json naming the reason and what is missing.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _query_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without pydantic's "or null" (an absent parameter is the null)."""
    options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
    inner = options[0] if len(options) == 1 else schema
    return {k: v for k, v in inner.items() if k not in {"title", "default", "anyOf"}} or {"type": "string"}
