"""`caremsg policy check` and policy loading on deliberately broken files: each kind of error is
reported with its file and line, and a broken policy never loads.

Longer than 400 lines because every test breaks a copy of the shipped policy through the same
fixture (``edited``) and reads what loading, ``policy check`` or ``policy test`` report; the files
it breaks (roles.csv, sms.toml, notices.toml, recall windows, test tables) load and are versioned as
one policy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.policy import PART2_SHORT_NOTICE, Policy, PolicyError, PolicySources
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


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


def test_policy_check_reports_a_broken_model(edited: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (edited / "model.conf").write_text("[request_definition]\nr = role, wf, facts\n")
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    assert errors(capsys.readouterr().err) == [
        "model.conf:1: error: not a valid Casbin model: missing section [policy_definition], "
        "[policy_effect], [matchers]"
    ]


SHIPPED_MATCHER = "m = r.wf == p.wf && g(r.role, p.role) && holds(p.requires, r.facts)"


@pytest.mark.parametrize(
    ("term", "named"),
    [
        # Each is harmless on these inputs; with another pattern or length each stalls or fills
        # the process (regexMatch("aaaa...!", "^(a+)+$"), r.wf.ljust(10**10)) while the what-if
        # page or a proposal checks the file.
        ('!regexMatch(r.wf, "^(a|a)+$")', "regexMatch() (a matcher calls only g, holds)"),
        ('!keyMatch2(r.wf, "/:a/:b")', "keyMatch2() (a matcher calls only g, holds)"),
        ('!globMatch(r.wf, "*a*a*b")', "globMatch() (a matcher calls only g, holds)"),
        ('r.wf.ljust(10) != ""', "r.wf.ljust() (a matcher calls only g, holds)"),
        ('eval("1") != ""', "eval() (a matcher calls only g, holds)"),
        ("r.facts.__class__ != p.wf", "'r.facts.__class__'"),
        ('r.wf + "x" != p.wf', "\"r.wf + 'x'\""),
        ('r.role != "x" * 9', "\"'x' * 9\""),
        ("[1 for c in r.wf] != []", "'[1 for c in r.wf]'"),
        ("r.wf[0] != p.wf", "'r.wf[0]'"),
        ("r.wf < p.wf", "comparisons other than ==, !=, in and not in"),
        ("r.role != 1", "'1' (only text)"),
        ("secret != p.wf", "'secret' (not a request or rule field)"),
    ],
)
def test_a_matcher_may_only_compare_fields_and_call_the_role_and_fact_functions(
    edited: Path, term: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model = edited / "model.conf"
    text = model.read_text()
    model.write_text(text.replace(SHIPPED_MATCHER, f"{SHIPPED_MATCHER} && {term}"))
    line = text.splitlines().index(SHIPPED_MATCHER) + 1
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    assert errors(capsys.readouterr().err) == [f"model.conf:{line}: error: matcher m may not use {named}"]


@pytest.mark.parametrize(
    "term",
    ['r.role in ("admin", "auditor")', '!(r.role == "external") || p.role != "x"', "r.wf != p.requires"],
)
def test_a_matcher_of_field_comparisons_and_role_and_fact_functions_passes(edited: Path, term: str) -> None:
    model = edited / "model.conf"
    model.write_text(model.read_text().replace(SHIPPED_MATCHER, f"{SHIPPED_MATCHER} && ({term})"))
    assert main(["policy", "check", "--dir", str(edited)]) == 0


@pytest.mark.parametrize(
    ("shipped", "edit", "key", "message"),
    [
        ("r = role, wf, facts", "r = role, wf", "r", "r must name 3 fields, as shipped"),
        ("p = role, wf, requires", "p = role, wf, requires, eft", "p", "p must name 3 fields, as shipped"),
        (
            "e = some(where (p.eft == allow))",
            "e = !some(where (p.eft == deny))",
            "e",
            "the effect allows what no rule allows: that must be denied",
        ),
    ],
)
def test_a_model_that_asks_other_fields_or_allows_by_default_is_refused(
    edited: Path, shipped: str, edit: str, key: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model pycasbin loads may still fail every decision (a request of another size raises) or
    allow a question no rule matches (deny-override): both are refused with the line to fix."""
    model = edited / "model.conf"
    text = model.read_text()
    model.write_text(text.replace(shipped, edit))
    line = text.splitlines().index(shipped) + 1
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    assert f"model.conf:{line}: error: {message}" in errors(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("name", "added", "message"),
    [
        (
            "workflows.toml",
            "x = " + "[" * 5000 + "]" * 5000,
            "not valid TOML here: arrays or tables nested too deeply",
        ),
        (
            "sms.toml",
            "x = " + "{a=" * 3000 + "1" + "}" * 3000,
            "not valid TOML here: arrays or tables nested too deeply",
        ),
        (
            "retention.toml",
            '[organization."\u00b2"]',
            "[organization.\u00b2]: an organization is named by its id",
        ),
        ("roles.csv", "p, admin, " + "x" * 140_000 + ", any", "not a line of comma-separated fields"),
        (
            "tests/default.csv",
            "admin, none, none, " + "x" * 140_000 + ", deny",
            "not a line of comma-separated fields",
        ),
        (
            "tests/default.csv",
            "admin, sms_group:\u00b2, none, sms.send, deny",
            "sms_group needs a compliance group id",
        ),
    ],
    ids=[
        "deep-array",
        "deep-inline-table",
        "superscript-org-id",
        "long-rule",
        "long-case",
        "superscript-group",
    ],
)
def test_a_line_the_parsers_choke_on_is_a_problem_at_its_line_not_a_crash(
    edited: Path, name: str, added: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each of these raised out of the check (RecursionError, csv.Error, ValueError): a 500 for the
    what-if page and a proposal, and the end of the live reload's file watcher."""
    path = edited / name
    text = path.read_text() if path.exists() else ""
    path.write_text(text + added + "\n")
    line = len((text + added).splitlines())
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    assert any(e.startswith(f"{name}:{line}: error: {message}") for e in errors(capsys.readouterr().err))


def test_a_toml_syntax_error_is_reported_once_at_its_real_line_without_cascading_errors(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workflows = edited / "workflows.toml"
    lines = workflows.read_text().splitlines()
    header = next(i for i, text in enumerate(lines) if text.startswith('[workflows."patient.read"]'))
    lines.insert(header + 1, 'facts = ["care_team", "covered"')  # the closing ] forgotten
    workflows.write_text("\n".join(lines) + "\n")

    assert main(["policy", "check", "--dir", str(edited)]) == 1

    # One error, at the line with the unclosed array: not ~60 "unknown workflow" lines after it.
    assert errors(capsys.readouterr().err) == [
        f"workflows.toml:{header + 2}: error: not valid TOML: Unclosed array"
    ]


def test_a_toml_error_the_parser_notices_at_the_end_is_reported_where_it_starts(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (edited / "workflows.toml").write_text('[workflows."a.b"]\nfacts = [\n')
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    (problem,) = errors(capsys.readouterr().err)
    assert problem.startswith("workflows.toml:2: error: not valid TOML: ")


def test_problems_name_files_relative_to_the_policy_directory(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    number = _append(edited, "p, janitor, patient.read, any")
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    (problem,) = errors(capsys.readouterr().err)
    assert problem.startswith(f"roles.csv:{number}: error: ")
    assert str(edited) not in problem


def test_policy_check_warns_about_a_workflow_nobody_may_run(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workflows = edited / "workflows.toml"
    workflows.write_text(workflows.read_text() + '\n[workflows."patient.archive"]\nresource = "patient"\n')
    table = edited / "tests" / "default.csv"
    table.write_text(table.read_text() + "admin, own_org, none, patient.archive, deny: role_not_permitted\n")
    assert main(["policy", "check", "--dir", str(edited)]) == 0
    assert "workflow patient.archive has no rule: nobody can run it" in capsys.readouterr().err


def test_policy_check_fails_when_a_workflow_has_no_test_case(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workflows = edited / "workflows.toml"
    before = workflows.read_text()
    workflows.write_text(before + '\n[workflows."patient.archive"]\nresource = "patient"\n')
    line = len(before.splitlines()) + 2

    assert main(["policy", "check", "--dir", str(edited)]) == 1

    assert errors(capsys.readouterr().err) == [
        f"workflows.toml:{line}: error: workflow patient.archive has no test case: add one to tests/*.csv"
    ]


def test_policy_check_fails_when_every_test_table_is_deleted(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for table in (edited / "tests").glob("*.csv"):
        table.unlink()
    workflows = len(Policy.from_sources(read_policy_sources(edited)).workflows)

    assert main(["policy", "check", "--dir", str(edited)]) == 1

    found = errors(capsys.readouterr().err)
    assert len(found) == workflows
    assert all("has no test case" in problem for problem in found)


# --- sms.toml is part of the policy ------------------------------------------------------------------


def test_a_compliance_group_id_that_is_not_a_number_is_an_error_at_its_line_in_sms_toml(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sms = edited / "sms.toml"
    text = sms.read_text()
    assert "compliance_group_ids = []" in text
    sms.write_text(text.replace("compliance_group_ids = []", 'compliance_group_ids = ["seven"]'))
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("compliance_group_ids"))

    assert main(["policy", "check", "--dir", str(edited)]) == 1

    (problem,) = errors(capsys.readouterr().err)
    assert problem.startswith(
        f"sms.toml:{line}: error: full_text.compliance_group_ids: 'seven' is not a compliance group id"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[full_text]\ncompliance_group_ids = 7\n", "sms.toml:2: error: full_text.compliance_group_ids must"),
        ("[full_text]\ncompliance_group_ids = [7\n", "sms.toml:2: error: not valid TOML"),
        ("[full_text]\ncompliance_groups = [7]\n", "sms.toml:2: error: full_text: unknown key"),
        ("[fulltext]\ncompliance_group_ids = [7]\n", "sms.toml:1: error: unknown table or key 'fulltext'"),
        (
            "[full_text]\ncompliance_group_ids = [true]\n",
            "sms.toml:2: error: full_text.compliance_group_ids:",
        ),
    ],
    ids=["not-a-list", "bad-toml", "unknown-key", "unknown-table", "boolean"],
)
def test_each_kind_of_sms_toml_error_is_reported_with_file_and_line(
    edited: Path, text: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (edited / "sms.toml").write_text(text)
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    (problem,) = errors(capsys.readouterr().err)
    assert problem.startswith(expected)


def test_sms_toml_is_part_of_the_policy_and_of_its_version(edited: Path) -> None:
    shipped = Policy.from_sources(read_policy_sources(edited))
    assert shipped.sms_full_text_groups == frozenset()
    (edited / "sms.toml").write_text("[full_text]\ncompliance_group_ids = [7, 9]\n")

    changed = Policy.from_sources(read_policy_sources(edited))

    assert changed.sms_full_text_groups == {7, 9}
    assert changed.version != shipped.version
    assert changed.sms_version != shipped.sms_version


def test_a_missing_sms_toml_means_no_group_gets_full_text(edited: Path) -> None:
    (edited / "sms.toml").unlink()
    assert Policy.from_sources(read_policy_sources(edited)).sms_full_text_groups == frozenset()


# --- notices.toml is part of the policy -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[part2]\nnotice = ""\n',
            "notices.toml:2: error: part2.notice must be text of 1 to 1000 characters",
        ),
        ("[part2]\nnotice = 7\n", "notices.toml:2: error: part2.notice must be text"),
        ('[part2]\nnotice = "unclosed\n', "notices.toml:2: error: not valid TOML"),
        ('[part2]\ntext = "x"\n', "notices.toml:2: error: part2: unknown key 'text'"),
        ('[part3]\nnotice = "x"\n', "notices.toml:1: error: unknown table or key 'part3'"),
    ],
    ids=["blank", "not-text", "bad-toml", "unknown-key", "unknown-table"],
)
def test_each_kind_of_notices_toml_error_is_reported_with_file_and_line(
    edited: Path, text: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (edited / "notices.toml").write_text(text)
    assert main(["policy", "check", "--dir", str(edited)]) == 1
    (problem,) = errors(capsys.readouterr().err)
    assert problem.startswith(expected)


def test_the_part2_notice_is_policy_and_part_of_its_version(edited: Path) -> None:
    shipped = Policy.from_sources(read_policy_sources(edited))
    assert shipped.part2_notice == PART2_SHORT_NOTICE
    (edited / "notices.toml").write_text(
        '[part2]\nnotice = """\nThis information has been disclosed\n to you."""\n'
    )

    changed = Policy.from_sources(read_policy_sources(edited))

    assert changed.part2_notice == "This information has been disclosed to you."
    assert changed.version != shipped.version
    (edited / "notices.toml").unlink()
    assert Policy.from_sources(read_policy_sources(edited)).part2_notice == PART2_SHORT_NOTICE


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


def test_policy_test_prints_which_workflows_and_rules_no_case_exercises(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = edited / "tests" / "default.csv"
    kept = [line for line in table.read_text().splitlines() if "policy.reload" not in line]
    table.write_text("\n".join(kept) + "\n")
    policy = Policy.from_sources(read_policy_sources(edited))
    reload_rules = [r for r in policy.rules if r.workflow == "policy.reload"]
    assert reload_rules

    assert main(["policy", "test", "--dir", str(edited)]) == 0

    out = capsys.readouterr().out
    assert f"coverage: {len(policy.workflows) - 1} of {len(policy.workflows)} workflows and " in out
    assert "  no case decides workflow policy.reload" in out
    for rule in reload_rules:
        assert f"  no case is allowed by {rule.located}" in out


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
    assert "FAIL tests/default.csv:" in err  # relative to the policy directory, so people can open it
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


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("peer_support, care_team, none, patient.raed, deny", "unknown workflow 'patient.raed'"),
        ("peer_suport, care_team, none, patient.read, deny", "unknown role 'peer_suport'"),
    ],
    ids=["workflow", "role"],
)
def test_a_test_case_with_a_typo_is_an_error_not_a_passing_deny(
    edited: Path, case: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = edited / "tests" / "default.csv"
    before = table.read_text()
    table.write_text(before + case + "\n")
    line = len(before.splitlines()) + 1

    assert main(["policy", "check", "--dir", str(edited)]) == 1
    (problem,) = errors(capsys.readouterr().err)
    assert problem.startswith(f"tests/default.csv:{line}: error: {message}")
    assert main(["policy", "test", "--dir", str(edited)]) == 1


def test_serve_refuses_a_broken_policy_with_file_and_line_instead_of_a_traceback(
    edited: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sms = edited / "sms.toml"
    text = sms.read_text()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("compliance_group_ids"))
    sms.write_text(text.replace("compliance_group_ids = []", 'compliance_group_ids = ["seven"]'))
    monkeypatch.setenv("CAREMSG_POLICY_DIRECTORY", str(edited))

    with pytest.raises(SystemExit) as exited:
        main(["serve"])

    assert f"sms.toml:{line}: error: full_text.compliance_group_ids: 'seven'" in str(exited.value.code)


def test_a_test_case_can_name_a_compliance_group_so_that_sms_toml_is_tested_too(
    edited: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "crisis.csv"
    table.write_text("external, sms_group:7, external, sms.send_full_text, allow\n")

    assert main(["policy", "test", "--dir", str(edited), str(table)]) == 1  # sms.toml lists no group
    assert "external sms.send_full_text [sms_group:7; consent external] -> allow; got deny" in (
        capsys.readouterr().err
    )
    (edited / "sms.toml").write_text("[full_text]\ncompliance_group_ids = [7]\n")
    assert main(["policy", "test", "--dir", str(edited), str(table)]) == 0


def test_diff_shows_the_test_cases_an_sms_toml_edit_changes(
    edited: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = edited / "tests" / "default.csv"
    table.write_text(table.read_text() + "external, sms_group:7, external, sms.send_full_text, allow\n")
    (edited / "sms.toml").write_text("[full_text]\ncompliance_group_ids = [7]\n")

    assert main(["policy", "diff", str(POLICY_DIR), str(edited), "--no-audit"]) == 0

    out = capsys.readouterr().out
    assert "external sms.send_full_text [sms_group:7; consent external]: deny -> allow" in out
    assert "1 of " in out


# --- the recall window is message.recall's window_minutes in workflows.toml ---------------------------


@pytest.mark.parametrize(
    ("workflow", "value"),
    [
        ("message.recall", "0"),
        ("message.recall", '"15"'),
        ("message.recall", "20000"),
        ("message.send", "15"),
    ],
    ids=["zero", "text", "over-a-week", "workflow-without-the-fact"],
)
def test_a_bad_recall_window_is_reported_at_its_line(
    edited: Path, workflow: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = edited / "workflows.toml"
    lines = path.read_text().splitlines()
    header = lines.index(f'[workflows."{workflow}"]')
    kept = [line for line in lines if not (line.startswith("window_minutes") and lines.index(line) > header)]
    kept.insert(header + 1, f"window_minutes = {value}")
    path.write_text("\n".join(kept) + "\n")

    assert main(["policy", "check", "--dir", str(edited)]) == 1

    (problem,) = errors(capsys.readouterr().err)
    assert problem.startswith(
        f"workflows.toml:{header + 2}: error: workflow {workflow}: window_minutes must be"
    )


def test_the_recall_window_is_policy_and_part_of_its_version(edited: Path) -> None:
    shipped = Policy.from_sources(read_policy_sources(edited))
    assert shipped.workflows["message.recall"].window_minutes == 15
    path = edited / "workflows.toml"
    path.write_text(path.read_text().replace("window_minutes = 15", "window_minutes = 5"))

    changed = Policy.from_sources(read_policy_sources(edited))

    assert changed.workflows["message.recall"].window_minutes == 5
    assert changed.version != shipped.version
