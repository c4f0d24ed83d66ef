"""The console's compliance groups: the organization's groups and those shared with it (the API's
``compliance_group.list``), create one (``compliance_group.create``, the form checked by the API's own
request model, each error next to its field) and share one of one's own with another organization
(``compliance_group.share``). The organizations to choose among are the API's ``organization.list``.
No second path.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from engine.errors import FieldError, InvalidInput, NotFound
from engine.model import Actor, ComplianceGroup, Organization
from engine.workflows import organizations
from handlers.console.forms import json_number, text
from handlers.problems import invalid_input
from handlers.requests import record_id, services
from handlers.schemas.identity import ComplianceGroupCreate, ComplianceGroupShare

#: Pages of the API's largest size read for the lists (groups, organizations to choose among).
PAGES = 5


def blank_form() -> dict[str, Any]:
    return {"name": "", "description": "", "organizationIds": [], "errors": {}}


async def _all_organizations(request: web.Request, actor: Actor) -> list[Organization]:
    svc = services(request)
    found: list[Organization] = []
    after: int | None = None
    for _ in range(PAGES):
        page = await organizations.list_organizations(svc, actor, after, svc.page_size(10**6))
        found += page.items
        after = page.next_cursor
        if after is None:
            break
    return found


async def _all_groups(request: web.Request, actor: Actor) -> list[ComplianceGroup]:
    svc = services(request)
    found: list[ComplianceGroup] = []
    after: int | None = None
    for _ in range(PAGES):
        page = await organizations.list_compliance_groups(svc, actor, after, svc.page_size(10**6))
        found += page.items
        after = page.next_cursor
        if after is None:
            break
    return found


async def listing(request: web.Request, actor: Actor) -> dict[str, Any]:
    """The groups (own ones first), the organizations by id, and the forms' blank state."""
    groups = await _all_groups(request, actor)
    orgs = await _all_organizations(request, actor)
    return {
        "groups": sorted(groups, key=lambda g: (g.organization_id != actor.organization_id, g.id)),
        "organizations": orgs,
        "names": {o.id: o.name for o in orgs},
        "own": actor.organization_id,
        "create": blank_form(),
        "share_errors": {},
        "message": None,
    }


def _field_of(location: str) -> str:
    name = location.split("[")[0]
    return name if name in {"name", "description", "organizationIds"} else "name"


async def create(request: web.Request, actor: Actor) -> tuple[int, dict[str, Any]]:
    """Submit the create form: (303 or 422, the form's state with each error next to its field)."""
    form = await request.post()
    chosen = [v.strip() for v in form.getall("organizationIds", []) if isinstance(v, str) and v.strip()]
    state: dict[str, Any] = {
        "name": text(form, "name"),
        "description": text(form, "description"),
        "organizationIds": chosen,
        "errors": {},
    }
    body: dict[str, Any] = {"name": state["name"], "organizationIds": [json_number(v) for v in chosen]}
    if state["description"]:
        body["description"] = state["description"]
    try:
        try:
            parsed = ComplianceGroupCreate.model_validate_json(json.dumps(body))
        except ValidationError as exc:
            raise invalid_input(exc) from None
        cmd = organizations.CreateComplianceGroup(parsed.name, parsed.description, parsed.organization_ids)
        await organizations.create_compliance_group(services(request), actor, cmd)
    except InvalidInput as invalid:
        errors: dict[str, str] = {}
        for e in invalid.errors:
            where = _field_of(e.field)
            message = {
                ("organizationIds", "too_short"): "Choose at least one organization.",
                ("name", "string_too_short"): "Enter a name.",
                ("name", "missing"): "Enter a name.",
            }.get((where, e.type), e.message)
            errors[where] = f"{errors[where]} {message}" if where in errors else message
        state["errors"] = errors
        return 422, state
    return 303, state


async def share(request: web.Request, actor: Actor) -> tuple[int, int, str | None]:
    """Submit a share form: (group id, status, the error to show next to its organization or None)."""
    group_id = record_id(request.match_info["group_id"])
    if group_id is None:
        raise NotFound("compliance_group")
    form = await request.post()
    try:
        try:
            body = ComplianceGroupShare.model_validate_json(
                json.dumps({"organizationId": json_number(text(form, "organizationId"))})
            )
        except ValidationError:
            raise InvalidInput([FieldError("organizationId", "Choose an organization.")]) from None
        cmd = organizations.ShareComplianceGroup(group_id, body.organization_id)
        await organizations.share_compliance_group(services(request), actor, cmd)
    except InvalidInput as invalid:
        return group_id, 422, "; ".join(e.message for e in invalid.errors)
    return group_id, 303, None
