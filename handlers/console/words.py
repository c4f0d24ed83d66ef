"""The policy in words: every rule of roles.csv as a sentence, grouped by workflow, and the facts
explained — what the console's policy page shows a compliance officer.

The sentences are built from the loaded policy (the rules as parsed, with their file and line), so
they always say what the engine decides; only the phrasing of roles and facts lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.policy import Policy, Rule

ROLE_NOUNS: dict[str, str] = {
    "peer_support": "A peer support specialist",
    "care_team_member": "A care-team member",
    "admin": "An admin",
    "compliance_officer": "A compliance officer",
    "auditor": "An auditor",
    "external": "An external participant (by SMS)",
}

#: Each fact as the condition a rule states, and as the glossary explains it.
FACTS: dict[str, tuple[str, str]] = {
    "self": ("it is their own account", "The record is the person's own account."),
    "own_org": (
        "the record belongs to their own organization",
        "The record (patient, account, consent, contact) belongs to the person's own organization.",
    ),
    "care_team": ("they are on the patient's care team", "The person is on the patient's care team."),
    "covered": (
        "the patient is covered",
        "The patient is of the person's own organization, or an active consent with the workflow's "
        "scope and purpose discloses the patient to the person's organization (directly or through "
        "a compliance group).",
    ),
    "member": ("they are a member of the conversation", "The person is a member of the conversation."),
    "external_consent": (
        "a consent names the external participant",
        "An active consent names the external participant's number (or their organization, whose "
        "contact directory lists the number) with scope sms.",
    ),
    "break_glass": (
        "they have opened emergency access to the patient",
        "The person has an open break-the-glass session for the patient (it expires by itself; every "
        "record made under it is flagged for review).",
    ),
    "treatable": (
        "their organization may treat the patient",
        "The patient is of the person's organization, or a consent for treatment discloses the "
        "patient to it.",
    ),
    "sms_full_text_group": (
        "the recipient's organization is listed for full-text SMS",
        "The SMS recipient's organization is in a compliance group that policies/sms.toml lists.",
    ),
    "shared": (
        "the group was shared with their organization",
        "The compliance group belongs to another organization, which shared it with the person's "
        "organization by name.",
    ),
    "proposed_by_self": (
        "they proposed the change themself",
        "The proposed policy change was made by the person themself.",
    ),
    "proposed_by_other": (
        "someone else proposed the change",
        "The proposed policy change was made by another person: the second pair of eyes a change "
        "needs before it is applied.",
    ),
    "sender": (
        "they sent the message",
        "The person is the sender of the message.",
    ),
    "recall_window": (
        "the message is still within its recall window",
        "The message was sent less than the workflow's window_minutes (workflows.toml) ago.",
    ),
}


@dataclass(frozen=True)
class Sentence:
    text: str
    located: str


@dataclass(frozen=True)
class WorkflowInWords:
    name: str
    description: str
    phi: bool
    sentences: tuple[Sentence, ...]


def sentence(rule: Rule, description: str) -> str:
    """``A peer support specialist may read a patient when they are on the patient's care team and
    the patient is covered.``"""
    who = ROLE_NOUNS.get(rule.role, f"Role {rule.role}")
    what = description[:1].lower() + description[1:]
    conditions = [FACTS.get(f, (f"the fact {f} holds", ""))[0] for f in sorted(rule.requires)]
    when = f" when {' and '.join(conditions)}" if conditions else ", always"
    return f"{who} may {what}{when}."


def policy_in_words(policy: Policy) -> list[WorkflowInWords]:
    """Every workflow of the policy (in name order) with a sentence per rule; a workflow no rule
    mentions says that nobody may perform it."""
    grouped: list[WorkflowInWords] = []
    for name in sorted(policy.workflows):
        spec = policy.workflows[name]
        rules = [r for r in policy.rules if r.workflow == name]
        grouped.append(
            WorkflowInWords(
                name,
                spec.description,
                spec.phi,
                tuple(Sentence(sentence(r, spec.description), r.located) for r in rules),
            )
        )
    return grouped


def facts_explained(policy: Policy) -> list[tuple[str, str]]:
    """The facts the policy's workflows declare, each with its explanation."""
    used = sorted({f for spec in policy.workflows.values() for f in spec.facts})
    return [(f, FACTS.get(f, ("", "Not described yet."))[1]) for f in used]
