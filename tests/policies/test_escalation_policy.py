"""escalation.toml is part of the policy: checked by `caremsg policy check` with file and line, part of
the policy's version, optional (the default schedule without it), reloaded with the other files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.escalation import EscalationSchedule
from engine.policy import Policy
from handlers.cli import main
from integrations.policy_files import load_tested_policy, read_policy_sources

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def edited(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, copy)
    return copy


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


def test_the_shipped_schedule_is_the_documented_default() -> None:
    policy = Policy.from_sources(read_policy_sources(POLICY_DIR))
    assert policy.escalation == EscalationSchedule(2, 5, 10, 15)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[urgent]\ntext_after_minutes = -1\n",
            "escalation.toml:2: error: urgent.text_after_minutes: -1 is not",
        ),
        (
            "[urgent]\ntext_after_minutes = '5'\n",
            "escalation.toml:2: error: urgent.text_after_minutes: '5' is not",
        ),
        (
            "[urgent]\nadmin_after_minutes = 1441\n",
            "escalation.toml:2: error: urgent.admin_after_minutes: 1441",
        ),
        ("[urgent]\nrealert_every = 2\n", "escalation.toml:2: error: urgent: unknown key 'realert_every'"),
        ("[urgnet]\nrealert_every_minutes = 2\n", "escalation.toml:1: error: unknown table or key 'urgnet'"),
        ("[urgent]\nrealert_every_minutes = [2\n", "escalation.toml:2: error: not valid TOML"),
        (
            "[urgent]\non_call_after_minutes = true\n",
            "escalation.toml:2: error: urgent.on_call_after_minutes: True",
        ),
    ],
    ids=["negative", "text", "too-long", "unknown-key", "unknown-table", "bad-toml", "boolean"],
)
def test_each_kind_of_escalation_toml_error_is_reported_with_file_and_line(
    edited: Path, text: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (edited / "escalation.toml").write_text(text)
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    (problem,) = errors(capsys.readouterr().err)
    assert problem.startswith(expected)


def test_an_edited_schedule_changes_the_policy_and_its_version(edited: Path) -> None:
    shipped = Policy.from_sources(read_policy_sources(edited))
    (edited / "escalation.toml").write_text(
        "[urgent]\nrealert_every_minutes = 3\non_call_after_minutes = 0\n"
    )

    changed = Policy.from_sources(read_policy_sources(edited))

    assert changed.escalation == EscalationSchedule(3, 5, 0, 15)  # keys left out keep their defaults
    assert changed.version != shipped.version
    assert changed.escalation_version != shipped.escalation_version


def test_without_escalation_toml_the_default_schedule_applies(edited: Path) -> None:
    (edited / "escalation.toml").unlink()
    assert Policy.from_sources(read_policy_sources(edited)).escalation == EscalationSchedule()


def test_a_broken_schedule_keeps_a_live_reload_out(edited: Path) -> None:
    (edited / "escalation.toml").write_text("[urgent]\nrealert_every_minutes = 'often'\n")
    policy, problems = load_tested_policy(edited)
    assert policy is None
    assert any(p.startswith("escalation.toml:2:") for p in problems)
