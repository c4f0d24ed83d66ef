"""Live policy reload: an edit goes live without a restart (file change, SIGHUP, or the admin API),
but only after it passes its checks and its own test tables; a broken edit is refused, logged, and
the old policy keeps serving."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from structlog.testing import capture_logs

from handlers.app import create_app
from handlers.settings import Settings
from tests.support.api import Api
from tests.support.messaging import CareTeam, care_team, send, settled_deliveries
from tests.support.polling import eventually

T = TypeVar("T")
POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    return target


@pytest.fixture
async def live(aiohttp_client: Any, settings: Settings, policy_dir: Path) -> Api:
    policy = settings.policy.model_copy(update={"directory": str(policy_dir), "watch_interval_seconds": 0.05})
    return Api(await aiohttp_client(create_app(settings.model_copy(update={"policy": policy}))))


@pytest.fixture
async def unwatched(aiohttp_client: Any, settings: Settings, policy_dir: Path) -> Api:
    """An app that polls its policy files only hourly: an API reload cannot race the file watcher."""
    policy = settings.policy.model_copy(update={"directory": str(policy_dir), "watch_interval_seconds": 3600})
    return Api(await aiohttp_client(create_app(settings.model_copy(update={"policy": policy}))))


def append(path: Path, text: str) -> int:
    before = path.read_text()
    path.write_text(before + text + "\n")
    return len((before + text).splitlines())


async def version(api: Api, who: Any) -> str:
    status, body = await api.call("GET", "/api/policy", who)
    assert status == 200, body
    return str(body["version"])


async def test_get_policy_shows_the_version_in_force_to_administrators_only(live: Api) -> None:
    org = await live.organization()
    admin, peer = await live.person("admin", org), await live.person("peer_support", org)

    status, body = await live.call("GET", "/api/policy", admin)

    assert status == 200
    assert body.keys() == {"version", "loadedAt", "ruleCount", "workflowCount"}
    assert len(body["version"]) == 16
    assert body["ruleCount"] > 50
    assert (await live.call("GET", "/api/policy", peer))[0] == 403


async def test_a_broken_edit_is_refused_with_file_and_line_and_the_old_policy_keeps_serving(
    live: Api, policy_dir: Path
) -> None:
    org = await live.organization()
    admin = await live.person("admin", org)
    peer = await live.person("peer_support", org)
    before = await version(live, admin)
    line = append(policy_dir / "roles.csv", "p, janitor, patient.read, any")

    with capture_logs() as logs:
        status, body = await live.call("POST", "/api/policy/reload", admin)

    assert status == 422
    assert any(f"roles.csv:{line}: error: unknown role 'janitor'" in e["message"] for e in body["errors"])
    assert await version(live, admin) == before
    assert (
        await live.call(
            "POST", "/api/patients", peer, json={"firstName": "A", "lastName": "B", "riskLevel": "low"}
        )
    )[0] == 201
    # Logged by the API call (and by the file watcher, which saw the same edit).
    errors = [e for e in logs if e["log_level"] == "error"]
    assert errors
    assert {e["event"] for e in errors} == {"policy.reload_rejected"}
    assert all(e["version"] == before for e in errors)


async def test_an_edit_that_breaks_its_own_test_table_is_refused(live: Api, policy_dir: Path) -> None:
    org = await live.organization()
    officer = await live.person("compliance_officer", org)
    before = await version(live, officer)
    # Valid syntax, but the shipped table expects auditors not to reload the policy.
    append(policy_dir / "roles.csv", "p, auditor, policy.reload, any")

    status, body = await live.call("POST", "/api/policy/reload", officer)

    assert status == 422
    assert any("test failed" in e["message"] and "policy.reload" in e["message"] for e in body["errors"])
    assert await version(live, officer) == before


async def test_a_valid_edit_is_swapped_in_by_the_api_and_audited(unwatched: Api, policy_dir: Path) -> None:
    # With a watching app the watcher may swap the edit in first and the API then answers "unchanged".
    live = unwatched
    org = await live.organization()
    officer = await live.person("compliance_officer", org)
    auditor = await live.person("auditor", org)
    before = await version(live, officer)
    append(policy_dir / "roles.csv", "# reviewed by compliance")

    status, body = await live.call("POST", "/api/policy/reload", officer)

    assert status == 200, body
    assert (body["outcome"], body["previousVersion"]) == ("swapped", before)
    assert await version(live, officer) == body["version"] != before
    assert (await live.call("POST", "/api/policy/reload", auditor))[0] == 403


async def test_a_changed_file_is_picked_up_without_any_call(live: Api, policy_dir: Path) -> None:
    org = await live.organization()
    admin = await live.person("admin", org)
    before = await version(live, admin)
    append(policy_dir / "workflows.toml", "# a comment is a new version")

    async def changed() -> str | None:
        now = await version(live, admin)
        return now if now != before else None

    await eventually(changed, "the watcher to swap in the edited files")


async def test_a_file_that_once_crashed_the_check_is_refused_and_the_watcher_goes_on(
    live: Api, policy_dir: Path
) -> None:
    """Arrays nested a few thousand deep made tomllib raise RecursionError out of the check: the
    file watcher's task ended with it, and no later edit went live until a restart."""
    org = await live.organization()
    admin = await live.person("admin", org)
    before = await version(live, admin)
    workflows = policy_dir / "workflows.toml"
    shipped = workflows.read_text()
    with capture_logs() as logs:
        workflows.write_text(shipped + "x = " + "[" * 5000 + "]" * 5000 + "\n")

        async def refused() -> list[Any]:
            return [e for e in logs if e["event"] == "policy.reload_rejected" and e["trigger"] == "file"]

        [rejected] = await eventually(refused, "the watcher to refuse the file")
    line = shipped.count("\n") + 1
    assert rejected["problems"] == [
        f"workflows.toml:{line}: error: not valid TOML here: arrays or tables nested too deeply"
    ]
    assert await version(live, admin) == before
    workflows.write_text(shipped + "# a comment is a new version\n")

    async def changed() -> str | None:
        now = await version(live, admin)
        return now if now != before else None

    await eventually(changed, "the watcher to swap in the next edit")


async def test_a_file_saved_in_another_encoding_is_refused_at_its_line_and_the_watcher_goes_on(
    live: Api, policy_dir: Path
) -> None:
    """An accent in a comment saved as Latin-1 (an editor's "ANSI") made reading the file raise out
    of the check, which ended the watcher's task like the nesting above."""
    org = await live.organization()
    admin = await live.person("admin", org)
    before = await version(live, admin)
    rules = policy_dir / "roles.csv"
    shipped = rules.read_text()
    with capture_logs() as logs:
        rules.write_bytes((shipped + "# revisé\n").encode("latin-1"))

        async def refused() -> list[Any]:
            return [e for e in logs if e["event"] == "policy.reload_rejected" and e["trigger"] == "file"]

        [rejected] = await eventually(refused, "the watcher to refuse the file")
    line = shipped.count("\n") + 1
    reason = f"not UTF-8 text (byte 0xe9 on line {line}); save the file as UTF-8"
    assert rejected["problems"] == [f"roles.csv:{line}: error: cannot read: {reason}"]
    assert await version(live, admin) == before
    rules.write_text(shipped + "# revised\n")

    async def changed() -> str | None:
        now = await version(live, admin)
        return now if now != before else None

    await eventually(changed, "the watcher to swap in the file saved again as UTF-8")


async def test_a_check_that_fails_unexpectedly_refuses_the_edit_and_the_watcher_goes_on(
    live: Api, policy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a reload's check raises (a bug of caremsg's or of a parser it uses), the running
    version stays, the reload answers ``rejected`` and the watcher takes in the next edit."""
    import integrations.policy_reload as reload_module

    org = await live.organization()
    officer = await live.person("compliance_officer", await live.governing_organization())
    before = await version(live, officer)
    checked = reload_module.load_tested_policy
    failures: list[str] = []

    def broken_check(directory: Path) -> Any:
        failures.append(str(directory))
        raise ZeroDivisionError("a bug in the check")

    monkeypatch.setattr(reload_module, "load_tested_policy", broken_check)
    append(policy_dir / "roles.csv", "# reviewed")

    async def checked_once() -> list[str]:
        return failures

    with capture_logs() as logs:
        await eventually(checked_once, "the watcher to run the check")
        status, body = await live.call("POST", "/api/policy/reload", officer)
    assert status == 422, body
    assert [e["message"] for e in body["errors"]] == [
        "the policy could not be checked (ZeroDivisionError); the running version stays"
    ]
    assert await version(live, officer) == before
    assert [e["error"] for e in logs if e["event"] == "policy.reload_failed"][:2] == ["ZeroDivisionError"] * 2

    monkeypatch.setattr(reload_module, "load_tested_policy", checked)
    append(policy_dir / "roles.csv", "# reviewed again")

    async def changed() -> str | None:
        now = await version(live, await live.person("admin", org))
        return now if now != before else None

    await eventually(changed, "the watcher to swap in the next edit")


async def test_a_changed_sms_toml_is_picked_up_by_the_watcher(live: Api, policy_dir: Path) -> None:
    org = await live.organization()
    admin = await live.person("admin", org)
    before = await version(live, admin)
    (policy_dir / "sms.toml").write_text("[full_text]\ncompliance_group_ids = [4242]\n")

    async def changed() -> str | None:
        now = await version(live, admin)
        return now if now != before else None

    await eventually(changed, "the watcher to swap in the edited sms.toml")
    assert live.services.policy.current.sms_full_text_groups == {4242}


async def test_sighup_reloads_the_policy(live: Api, policy_dir: Path) -> None:
    org = await live.organization()
    admin = await live.person("admin", org)
    before = await version(live, admin)
    # Same size and an older mtime, so only the signal, not the watcher, can notice the change.
    rules = policy_dir / "roles.csv"
    stat = rules.stat()
    rules.write_text(rules.read_text().replace("# caremsg role rules", "# CAREMSG role rules", 1))
    os.utime(rules, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    os.kill(os.getpid(), signal.SIGHUP)

    async def changed() -> str | None:
        now = await version(live, admin)
        return now if now != before else None

    await eventually(changed, "SIGHUP to swap in the edited files")


async def test_a_reload_through_the_api_reaches_another_instance_through_postgresql(
    aiohttp_client: Any, settings: Settings, policy_dir: Path
) -> None:
    # Both instances read the same files but poll them only hourly: only the NOTIFY can tell the
    # second one about the edit within the bound this test states.
    policy = settings.policy.model_copy(update={"directory": str(policy_dir), "watch_interval_seconds": 3600})
    configured = settings.model_copy(update={"policy": policy})
    first = Api(await aiohttp_client(create_app(configured)))
    second = Api(await aiohttp_client(create_app(configured)))
    org = await first.organization()
    officer = await first.person("compliance_officer", org)
    before = await version(second, officer)
    append(policy_dir / "roles.csv", "# reviewed again by compliance")

    status, body = await first.call("POST", "/api/policy/reload", officer)
    assert status == 200, body
    assert body["version"] != before

    async def second_caught_up() -> bool:
        return await version(second, officer) == body["version"]

    await eventually(second_caught_up, "the second instance to load the new version", within=3.0)


async def test_a_refused_reload_names_files_relative_to_the_policy_directory(
    unwatched: Api, policy_dir: Path
) -> None:
    org = await unwatched.organization()
    admin = await unwatched.person("admin", org)
    line = append(policy_dir / "roles.csv", "p, janitor, patient.read, any")

    status, body = await unwatched.call("POST", "/api/policy/reload", admin)

    assert status == 422
    assert body["errors"][0]["message"].startswith(f"roles.csv:{line}: error: ")
    assert str(policy_dir) not in json.dumps(body)  # never the server's directory


# --- sms.toml is reloaded with the other policy files -------------------------------------------------


async def test_a_broken_sms_toml_is_refused_with_file_and_line_and_the_old_policy_keeps_serving(
    unwatched: Api, policy_dir: Path
) -> None:
    org = await unwatched.organization()
    officer = await unwatched.person("compliance_officer", org)
    before = await version(unwatched, officer)
    sms = policy_dir / "sms.toml"
    text = sms.read_text()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("compliance_group_ids"))
    sms.write_text(text.replace("compliance_group_ids = []", 'compliance_group_ids = ["seven"]'))

    status, body = await unwatched.call("POST", "/api/policy/reload", officer)

    assert status == 422
    assert any(e["message"].startswith(f"sms.toml:{line}: error: ") for e in body["errors"]), body
    assert await version(unwatched, officer) == before


async def test_an_sms_toml_edit_goes_live_without_a_restart_and_the_next_text_is_decided_by_it(
    unwatched: Api, policy_dir: Path, db: asyncpg.Connection
) -> None:
    api = unwatched
    partner = await api.organization()
    team = await care_team(api, external_organization_id=partner)
    group = await db.fetchval(
        "INSERT INTO compliance_groups (name, organization_id, created_by)"
        " VALUES ('Crisis network', $1, $2) RETURNING id",
        team.organization_id,
        team.officer.id,
    )
    await db.execute(
        "INSERT INTO compliance_group_members (group_id, organization_id) VALUES ($1, $2)", group, partner
    )
    first = await sent(api, team, "first")
    (policy_dir / "sms.toml").write_text(f"[full_text]\ncompliance_group_ids = [{group}]\n")

    status, reloaded = await api.call("POST", "/api/policy/reload", team.officer)
    assert status == 200, reloaded
    assert reloaded["outcome"] == "swapped"
    second = await sent(api, team, "second")

    decided = {
        r["resource_id"]: r
        for r in await db.fetch(
            "SELECT resource_id, decision, policy_version, details FROM audit_events"
            " WHERE workflow = 'sms.send_full_text' AND resource_id = ANY($1::text[])",
            [str(first), str(second)],
        )
    }
    before, after = decided[str(first)], decided[str(second)]
    assert (before["decision"], after["decision"]) == ("deny", "allow")
    assert (before["policy_version"], after["policy_version"]) == (
        reloaded["previousVersion"],
        reloaded["version"],
    )
    assert (
        json.loads(before["details"])["sms_policy_version"]
        != json.loads(after["details"])["sms_policy_version"]
    )


async def sent(api: Api, team: CareTeam, text: str) -> int:
    status, accepted = await send(api, team.peer, team.conversation_id, text)
    assert status == 202, accepted
    await settled_deliveries(api, team.peer, accepted["id"])
    return int(accepted["id"])
