"""retention.toml is part of the policy: each kind of error is reported at file and line by
`caremsg policy check`, a valid file sets each organization's content lifespan, and the file is
versioned (and editable) with the rest."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.policy import Policy
from engine.retention import RetentionRules
from handlers.cli import main
from integrations.policy_files import read_policy_files, read_policy_sources

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def edited(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    return target


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[default]\ncontent_days = 0\n",
            'retention.toml:2: error: default.content_days must be "keep" or 1 to',
        ),
        ('[default]\ncontent_days = "forever"\n', "retention.toml:2: error: default.content_days must be"),
        ("[default]\ncontent_days = true\n", "retention.toml:2: error: default.content_days must be"),
        ("[default]\ncontent_days = 36501\n", "retention.toml:2: error: default.content_days must be"),
        ("[default]\ndays = 3\n", "retention.toml:2: error: default: unknown key 'days'"),
        ("[purge]\ncontent_days = 3\n", "retention.toml:1: error: unknown table or key 'purge'"),
        (
            "# x\n[organization.acme]\ncontent_days = 3\n",
            "retention.toml:2: error: [organization.acme]: an organization is named by its id",
        ),
        (
            "[organization.7]\ncontent_days = -1\n",
            "retention.toml:2: error: organization.7.content_days must be",
        ),
        ("[default]\ncontent_days = \n", "retention.toml:2: error: not valid TOML"),
    ],
    ids=[
        "zero",
        "text",
        "bool",
        "too-long",
        "unknown-key",
        "unknown-table",
        "org-not-id",
        "org-negative",
        "bad-toml",
    ],
)
def test_each_kind_of_retention_toml_error_is_reported_with_file_and_line(
    edited: Path, text: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (edited / "retention.toml").write_text(text)
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    (problem,) = errors(capsys.readouterr().err)
    assert problem.startswith(expected)


def test_the_shipped_policy_keeps_every_organizations_content(edited: Path) -> None:
    policy = Policy.from_sources(read_policy_sources(edited))
    assert policy.retention == RetentionRules()
    assert policy.retention.keeps_everything
    assert policy.retention.cutoff(1, datetime.now(UTC)) is None


def test_an_organizations_own_lifespan_wins_over_the_default(edited: Path) -> None:
    shipped = Policy.from_sources(read_policy_sources(edited))
    (edited / "retention.toml").write_text(
        "[default]\ncontent_days = 30\n\n[organization.7]\ncontent_days = 2555\n\n"
        '[organization.8]\ncontent_days = "keep"\n'
    )

    changed = Policy.from_sources(read_policy_sources(edited))

    now = datetime(2026, 12, 6, tzinfo=UTC)
    assert changed.retention.days_for(1) == 30
    assert changed.retention.days_for(7) == 2555
    assert changed.retention.cutoff(7, now) == now - timedelta(days=2555)
    assert changed.retention.cutoff(8, now) is None
    assert not changed.retention.keeps_everything
    assert changed.version != shipped.version
    assert changed.retention_version != shipped.retention_version


def test_a_missing_retention_toml_keeps_everything(edited: Path) -> None:
    (edited / "retention.toml").unlink()
    assert Policy.from_sources(read_policy_sources(edited)).retention.keeps_everything


def test_retention_toml_is_one_of_the_policy_files_a_proposal_may_change(edited: Path) -> None:
    files = read_policy_files(edited)
    assert "retention.toml" in files.names
    replaced = files.replaced("retention.toml", "[default]\ncontent_days = 9\n")
    assert replaced.text_of("retention.toml") == "[default]\ncontent_days = 9\n"
    assert Policy.from_sources(replaced.sources).retention.days_for(3) == 9
