"""`caremsg policy explain --user`: the decision, rule and facts, read from the real database."""

from __future__ import annotations

import asyncio

import pytest

from handlers.cli import main
from tests.support.api import Api


@pytest.fixture
def database_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)


async def _explain(*args: str) -> int:
    # The command runs its own event loop, as it does from a shell: give it a thread without one.
    return await asyncio.to_thread(main, ["policy", "explain", *args])


@pytest.mark.usefixtures("database_env")
async def test_explain_shows_an_allowed_read_with_its_rule_and_facts(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await api.patient(nurse)

    code = await _explain("--user", str(nurse.id), "--patient", str(patient_id), "--action", "patient.read")

    out = capsys.readouterr().out
    assert code == 0
    assert "decision: allow" in out
    assert "care_team_member, patient.read, care_team & covered" in out
    assert "facts:    care_team, covered, own_org" in out


@pytest.mark.usefixtures("database_env")
async def test_explain_shows_what_is_missing_for_staff_of_another_organization(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    nurse = await api.person("care_team_member", await api.organization())
    outsider = await api.person("care_team_member", await api.organization())
    patient_id = await api.patient(nurse)

    code = await _explain(
        "--user", str(outsider.id), "--patient", str(patient_id), "--action", "patient.read"
    )

    out = capsys.readouterr().out
    assert code == 1  # a deny exits 1
    assert "decision: deny" in out
    assert "reason:   not_on_care_team" in out
    assert "missing:  care_team, covered" in out


@pytest.mark.usefixtures("database_env")
async def test_explain_names_a_patient_that_does_not_exist(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    nurse = await api.person("care_team_member", await api.organization())

    code = await _explain("--user", str(nurse.id), "--patient", "999999", "--action", "patient.read")

    assert code == 1
    assert "No such patient" in capsys.readouterr().err
