"""`caremsg policy explain` and `caremsg policy diff`: what a question is decided, by which rule and
on which facts; and what an edit would change, in the test tables and in audited decisions."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import asyncpg
import pytest

from handlers.cli import main
from tests.support.database import asyncpg_dsn

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
READ_RULE = "p, peer_support,     patient.read,   care_team & covered"


@pytest.fixture
def edited(tmp_path: Path) -> Path:
    """The shipped policy with peer support reading care-team patients without a consent."""
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    rules = target / "roles.csv"
    assert READ_RULE in rules.read_text()
    rules.write_text(rules.read_text().replace(READ_RULE, "p, peer_support,     patient.read,   care_team"))
    return target


def test_explain_without_a_database_prints_the_decision_the_rule_and_the_facts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "policy",
            "explain",
            "--dir",
            str(POLICY_DIR),
            "--role",
            "care_team_member",
            "--action",
            "patient.read",
            "--relationship",
            "care_team",
            "--consent",
            "active",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "decision: allow" in out
    assert "care_team_member, patient.read, care_team & covered" in out
    assert "facts:    care_team, covered" in out


def test_explain_of_a_denial_names_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "policy",
                "explain",
                "--dir",
                str(POLICY_DIR),
                "--role",
                "peer_support",
                "--action",
                "patient.read",
                "--relationship",
                "care_team",
            ]
        )
        == 1  # a deny exits 1, so a script can branch on it
    )
    out = capsys.readouterr().out
    assert "decision: deny" in out
    assert "reason:   no_active_consent" in out
    assert "missing:  covered" in out


def test_explain_of_a_broken_policy_prints_file_and_line(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (edited / "roles.csv").write_text((edited / "roles.csv").read_text() + "p, nobody, patient.read, any\n")
    assert main(["policy", "explain", "--dir", str(edited), "--role", "admin", "--action", "user.list"]) == 1
    assert "roles.csv:" in capsys.readouterr().err


def test_diff_lists_the_test_cases_an_edit_changes(edited: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "diff", str(POLICY_DIR), str(edited), "--no-audit"]) == 0
    out = capsys.readouterr().out
    assert "peer_support patient.read [care_team; consent none]: deny -> allow" in out
    assert "1 of " in out


def test_diff_of_identical_policies_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "diff", str(POLICY_DIR), str(POLICY_DIR), "--no-audit"]) == 0
    assert "0 of " in capsys.readouterr().out


def test_diff_re_decides_recent_audited_decisions_from_their_recorded_facts(
    edited: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def audited() -> int:
        conn = await asyncpg.connect(**asyncpg_dsn(database_url))  # type: ignore[arg-type]
        try:
            return int(
                await conn.fetchval(
                    "INSERT INTO audit_events (event, workflow, outcome, actor_role, decision, details)"
                    " VALUES ('decision', 'patient.read', 'denied', 'peer_support', 'deny', $1::jsonb)"
                    " RETURNING id",
                    json.dumps({"facts": "care_team"}),
                )
            )
        finally:
            await conn.close()

    record = asyncio.run(audited())
    monkeypatch.setenv("DATABASE_URL", database_url)

    assert main(["policy", "diff", str(POLICY_DIR), str(edited), "--since-hours", "1"]) == 0

    out = capsys.readouterr().out
    assert f"audit {record} " in out
    assert "peer_support patient.read [care_team]: deny -> allow" in out
