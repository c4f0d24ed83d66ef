"""A policy file saved in another encoding than UTF-8 (an editor's "ANSI" or Latin-1, with an accent
in a comment) is a problem at its file and line for every tool a compliance team uses, never a
traceback: `policy check`, `policy test`, `policy diff` (the live reload: tests/api/test_policy_reload.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from handlers.cli import main

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
COMMENT = "# revisé par la conformité"  # é is one byte, 0xe9, in Latin-1: not UTF-8


def save_in_latin1(directory: Path, name: str) -> int:
    """Append :data:`COMMENT` to the file as a Latin-1 editor would save it; its line number."""
    path = directory / name
    text = path.read_text(encoding="utf-8") + COMMENT + "\n"
    path.write_bytes(text.encode("latin-1"))
    return text.count("\n")


@pytest.fixture
def edited(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    return target


def problem(name: str, line: int) -> str:
    reason = f"not UTF-8 text (byte 0xe9 on line {line}); save the file as UTF-8"
    return f"{name}:{line}: error: cannot read: {reason}"


@pytest.mark.parametrize(
    "name", ["roles.csv", "workflows.toml", "model.conf", "sms.toml", "tests/default.csv"]
)
@pytest.mark.parametrize("command", ["check", "test"])
def test_a_file_that_is_not_utf8_is_a_problem_at_its_line(
    edited: Path, name: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = save_in_latin1(edited, name)

    assert main(["policy", command, "--dir", str(edited)]) == 1

    assert problem(name, line) in capsys.readouterr().err


def test_policy_diff_names_the_side_that_is_not_utf8(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = save_in_latin1(edited, "tests/default.csv")

    assert main(["policy", "diff", str(POLICY_DIR), str(edited), "--no-audit"]) == 1

    assert problem("tests/default.csv", line) in capsys.readouterr().err


def test_a_table_named_on_the_command_line_that_is_not_utf8_is_named(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = save_in_latin1(edited, "tests/default.csv")
    table = edited / "tests" / "default.csv"

    assert main(["policy", "test", "--dir", str(POLICY_DIR), str(table)]) == 1

    assert problem("default.csv", line) in capsys.readouterr().err
