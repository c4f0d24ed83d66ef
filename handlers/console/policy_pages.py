"""The console's test tables and what-if pages: the code behind ``caremsg policy test``, ``policy
check`` and ``policy diff`` (``engine/policy_edits.py``) run from a browser, through the workflows
``console.policy.tests`` and ``console.policy.what_if``. A what-if is a dry run: nothing is applied.

The what-if form is ``multipart/form-data``: a file pasted into the text area (and which policy file
it stands for), and/or files uploaded, each standing for the policy file of its name. The browser
adds carriage returns to a text area's lines; they are taken out again, so a pasted file hashes as
the same file on disk would.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from engine.errors import FieldError, InvalidInput
from engine.model import Actor
from engine.policy_edits import PolicyFiles, question_of
from engine.policy_tables import CaseResult
from engine.workflows import console
from handlers.keys import clock_key, settings_key
from handlers.requests import services
from handlers.schemas import within_clinical_years
from integrations.policy_files import DirectoryPolicyFiles

#: The changed audited decisions a what-if lists (the counts per workflow cover all of them).
SHOWN_DECISIONS = 100
#: The default period of audited decisions: the last day.
DEFAULT_PERIOD = timedelta(hours=24)
_TIME_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def reader(request: web.Request) -> DirectoryPolicyFiles:
    """The policy files where this service reads its policy (``policy.directory``)."""
    return DirectoryPolicyFiles(request.app[settings_key].policy.path())


def case_rows(results: Iterable[CaseResult]) -> list[dict[str, Any]]:
    """Each case as a row a person reads: who, workflow, facts, expected, actual, rule, pass or fail."""
    rows = []
    for r in results:
        case, decision = r.case, r.decision
        stated = [*sorted(case.relationship), *(f"sms_group:{g}" for g in sorted(case.sms_groups))]
        rows.append(
            {
                "where": f"{case.file}:{case.line}",
                "who": case.who,
                "workflow": case.action,
                "relationship": " & ".join(stated) or "none",
                "consent": case.consent,
                "expected": "allow"
                if case.expect_allow
                else f"deny{': ' + case.expect_reason if case.expect_reason else ''}",
                "actual": "allow" if decision.allowed else f"deny: {decision.reason}",
                "rule": decision.rule,
                "passed": r.passed,
            }
        )
    return rows


async def tests_context(request: web.Request, actor: Actor) -> dict[str, Any]:
    found = await console.read_policy_tests(services(request), actor, reader(request))
    run = found.run
    return {
        "version": found.policy.version,
        "files_version": found.files_version,
        "rows": case_rows(run.results),
        "failed": len(run.failed),
        "problems": [str(p) for p in run.problems],
        "coverage": run.coverage,
    }


def _utc(raw: str, field: str, default: datetime, errors: list[FieldError]) -> datetime:
    """A ``datetime-local`` field read as UTC, within the API's years (1900-2999); an error for the
    workflow to report if it is none."""
    value = raw.strip()
    if not value:
        return default
    for fmt in _TIME_FORMATS:
        try:
            moment = datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        try:
            return within_clinical_years(moment)
        except ValueError as out_of_range:
            errors.append(FieldError(field, f"{str(out_of_range).capitalize()}."))
            return default
    errors.append(FieldError(field, "Enter a date and time, e.g. 2026-12-05T09:30 (UTC)."))
    return default


def _local(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def form_values(
    files: PolicyFiles | None,
    chosen: str = "roles.csv",
    text: str = "",
    since: str = "",
    until: str = "",
    *,
    now: datetime,
) -> dict[str, Any]:
    """The form's fields; the period defaults to the last DEFAULT_PERIOD up to the next minute of the
    app's clock (the one its decisions are recorded by)."""
    now = now.astimezone(UTC).replace(second=0, microsecond=0)
    return {
        "names": files.names if files is not None else [chosen],
        "name": chosen,
        "text": text,
        "from": since or _local(now - DEFAULT_PERIOD),
        "to": until or _local(now + timedelta(minutes=1)),
    }


async def form_context(request: web.Request, actor: Actor) -> dict[str, Any]:
    """The empty form; ``?file=roles.csv`` puts that file's current text in the text area."""
    files = await console.open_what_if(services(request), actor, reader(request))
    chosen = request.query.get("file", "")
    text = files.text_of(chosen) if chosen else None
    return {
        "form": form_values(
            files, chosen if text is not None else "roles.csv", text or "", now=request.app[clock_key]()
        ),
        "errors": {},
        "report": None,
    }


def _field(form: MultiDictProxy[Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _edited_files(form: MultiDictProxy[Any]) -> list[console.EditedFile]:
    """The pasted file (if any text was pasted) and every uploaded file (named by its file name)."""
    edited: list[console.EditedFile] = []
    pasted = _field(form, "text").replace("\r\n", "\n")
    if pasted.strip():
        edited.append(console.EditedFile(_field(form, "name"), pasted.encode(), "text"))
    for upload in form.getall("upload", []):
        if isinstance(upload, web.FileField) and upload.filename:
            edited.append(console.EditedFile(upload.filename, upload.file.read(), "upload"))
    return edited


def _report(outcome: console.WhatIf) -> dict[str, Any]:
    replayed = outcome.replay
    return {
        "in_force": outcome.in_force.version,
        "files_version": outcome.files_version,
        "new_version": outcome.checked.policy.version if outcome.checked.policy is not None else None,
        "edited": outcome.edited,
        "problems": [str(p) for p in outcome.checked.problems],
        "warnings": [str(p) for p in outcome.checked.warnings],
        "run": outcome.run,
        "rows": case_rows(outcome.run.failed) if outcome.run is not None else [],
        "changes": [
            {
                "where": f"{c.case.file}:{c.case.line}",
                "question": question_of(c.case),
                "before": c.before.decision,
                "after": c.after.decision,
                "why": c.after.rule or c.after.reason,
            }
            for c in outcome.changes
        ],
        "cases_compared": outcome.cases_compared,
        "replay": replayed,
        "per_workflow": replayed.changed_per_workflow() if replayed is not None else [],
        "shown": replayed.changed[:SHOWN_DECISIONS] if replayed is not None else (),
        "shown_limit": SHOWN_DECISIONS,
        "decisions_read": outcome.decisions_read,
        "limit_reached": outcome.decisions_read >= outcome.decisions_limit,
        "since": outcome.since,
        "until": outcome.until,
    }


async def try_edit(request: web.Request, actor: Actor) -> tuple[int, dict[str, Any]]:
    """Submit the what-if form: (status, context) with the report, or the form with each error
    next to its field (what was typed kept)."""
    form = await request.post()
    now = request.app[clock_key]()
    values = form_values(
        None, _field(form, "name"), _field(form, "text"), _field(form, "from"), _field(form, "to"), now=now
    )
    unread: list[FieldError] = []
    since = _utc(_field(form, "from"), "from", now - DEFAULT_PERIOD, unread)
    until = _utc(_field(form, "to"), "to", now, unread)
    cmd = console.TryEdit(tuple(_edited_files(form)), since, until, tuple(unread))
    try:
        outcome = await console.try_policy_edit(services(request), actor, reader(request), cmd)
    except InvalidInput as invalid:
        errors: dict[str, str] = {}
        for e in invalid.errors:
            errors[e.field] = f"{errors[e.field]} {e.message}" if e.field in errors else e.message
        # Only after the policy allowed the what-if: the form's list of files is no secret then.
        values["names"] = (await reader(request).read()).names
        return 422, {"form": values, "errors": errors, "report": None}
    values["names"] = list(outcome.file_names)
    return 200, {"form": values, "errors": {}, "report": _report(outcome)}
