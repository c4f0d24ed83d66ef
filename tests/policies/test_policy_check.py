"""`caremsg policy check` and policy loading on deliberately broken files: each kind of error is
reported with its file and line, and a broken policy never loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.policy import Policy, PolicyError, PolicySources
from handlers.cli import main
from integrations.policy_files import read_policy_sources

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def edited(tmp_path: Path) -> Path:
    """A copy of the shipped policy directory to break."""
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    return target


def _append(directory: Path, line: str) -> int:
    rules = directory / "roles.csv"
    text = rules.read_text()
    rules.write_text(text + line + "\n")
    return len((text + line).splitlines())


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("p, janitor, patient.read, care_team", "unknown role 'janitor'"),
        ("p, peer_support, patient.destroy, any", "unknown workflow 'patient.destroy'"),
        ("p, peer_support, patient.read, best_friend", "unknown fact 'best_friend'"),
        ("p, peer_support, organization.list, care_team", "rule can never match"),
        ("p, peer_support, patient.read", "a rule line reads: p, ROLE, WORKFLOW, REQUIRES"),
        ("x, peer_support, patient.read, any", "a rule line reads"),
        ("p, peer_support, patient.read, care_team & covered", "duplicate of the rule on line"),
        ("g, senior, wizard", "unknown inherited role 'wizard'"),
    ],
    ids=[
        "unknown-role",
        "unknown-workflow",
        "unknown-fact",
        "never-matches",
        "short-line",
        "bad-type",
        "duplicate",
        "bad-inheritance",
    ],
)
def test_policy_check_reports_each_kind_of_error_with_file_and_line(
    edited: Path, line: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    number = _append(edited, line)
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    err = capsys.readouterr().err
    assert f"roles.csv:{number}: error: {message}" in err


def test_policy_check_reports_a_broken_model(edited: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (edited / "model.conf").write_text("[request_definition]\nr = role, wf, facts\n")
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    assert "model.conf:0: error: not a valid Casbin model" in capsys.readouterr().err


def test_policy_check_reports_bad_toml_with_its_line(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (edited / "workflows.toml").write_text('[workflows."a.b"]\nfacts = [\n')
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    assert "workflows.toml" in capsys.readouterr().err


def test_policy_check_warns_about_a_workflow_nobody_may_run(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workflows = edited / "workflows.toml"
    workflows.write_text(workflows.read_text() + '\n[workflows."patient.archive"]\nresource = "patient"\n')
    assert main(["policy", "check", "--dir", str(edited)]) == 0
    assert "workflow patient.archive has no rule: nobody can run it" in capsys.readouterr().err


def test_policy_check_accepts_the_shipped_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", "--dir", str(POLICY_DIR)]) == 0
    assert "OK" in capsys.readouterr().out


def test_a_broken_policy_does_not_load(edited: Path) -> None:
    _append(edited, "p, janitor, patient.read, any")
    with pytest.raises(PolicyError) as raised:
        Policy.from_sources(read_policy_sources(edited))
    assert [p.message for p in raised.value.problems] == [
        "unknown role 'janitor' (known: admin, auditor, "
        "care_team_member, compliance_officer, external, "
        "peer_support)"
    ]


def test_the_policy_version_is_a_hash_of_the_files_content(edited: Path) -> None:
    original = read_policy_sources(edited)
    assert (
        Policy.from_sources(original).version == Policy.from_sources(read_policy_sources(POLICY_DIR)).version
    )
    (edited / "roles.csv").write_text(original.rules + "# a comment changes the content\n")
    assert Policy.from_sources(read_policy_sources(edited)).version != Policy.from_sources(original).version


def test_policy_test_runs_the_shipped_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", "--dir", str(POLICY_DIR)]) == 0
    assert ", 0 failed" in capsys.readouterr().out


def test_policy_test_fails_an_edit_that_breaks_a_case(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = edited / "roles.csv"
    rules.write_text(
        rules.read_text().replace(
            "p, peer_support,     patient.read,   care_team & covered",
            "p, peer_support,     patient.read,   care_team",
        )
    )
    assert main(["policy", "test", "--dir", str(edited)]) == 1
    err = capsys.readouterr().err
    assert "FAIL default.csv" not in err  # the full path is printed, so people can open it
    assert "peer_support patient.read [care_team; consent none] -> deny: no_active_consent; got allow" in err


def test_policy_test_reports_a_malformed_case_with_its_line(
    edited: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "mine.csv"
    table.write_text("peer_support, care_team, sometimes, patient.read, allow\n")
    assert main(["policy", "test", "--dir", str(edited), str(table)]) == 1
    assert f"{table}:1: error: unknown consent state 'sometimes'" in capsys.readouterr().err


def test_sources_from_text_need_no_files() -> None:
    sources = read_policy_sources(POLICY_DIR)
    copy = PolicySources(model=sources.model, rules=sources.rules, workflows=sources.workflows)
    assert Policy.from_sources(copy).decide("auditor", "audit.read", {"own_org"}).allowed
