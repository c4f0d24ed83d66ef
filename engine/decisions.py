"""What a policy decision says: allowed or not, which rule matched, why, and under which policy version."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Fact(StrEnum):
    """Relationship facts caremsg computes between a person and a record before deciding."""

    SELF = "self"
    OWN_ORG = "own_org"
    CARE_TEAM = "care_team"
    COVERED = "covered"
    MEMBER = "member"
    EXTERNAL_CONSENT = "external_consent"
    BREAK_GLASS = "break_glass"
    #: An SMS recipient's organization is in a compliance group that policies/sms.toml names for
    #: full-text SMS.
    SMS_FULL_TEXT_GROUP = "sms_full_text_group"
    #: The patient is one the person's organization may ever treat: its own, or disclosed to it by an
    #: active consent for treatment (what emergency access needs).
    TREATABLE = "treatable"
    #: The record (a compliance group) belongs to another organization, which shared it with the
    #: person's organization by name.
    SHARED = "shared"
    #: The policy change (a proposal) was proposed by the person themself: they may withdraw it.
    PROPOSED_BY_SELF = "proposed_by_self"
    #: The policy change was proposed by someone else: the second pair of eyes that may approve or
    #: reject it.
    PROPOSED_BY_OTHER = "proposed_by_other"
    #: The person's organization governs the deployment's policy (``policy.governing_organization``):
    #: the policy files decide for every organization, so only its people may change them.
    GOVERNING = "governing"
    #: The person sent the message (recall).
    SENDER = "sender"
    #: The message was sent less than its workflow's ``window_minutes`` ago (workflows.toml).
    RECALL_WINDOW = "recall_window"


#: The reason code a denial carries when a required fact does not hold, and the hint shown to clients.
MISSING_FACT_REASONS: dict[Fact, tuple[str, str]] = {
    Fact.SELF: ("not_self", "Only the person themself may do this."),
    Fact.OWN_ORG: ("other_organization", "The record belongs to another organization."),
    Fact.CARE_TEAM: ("not_on_care_team", "You must be on the patient's care team."),
    Fact.COVERED: (
        "no_active_consent",
        "The patient belongs to another organization and no active consent discloses the patient to "
        "your organization (directly or through a compliance group).",
    ),
    Fact.MEMBER: ("not_conversation_member", "Only members of the conversation may do this."),
    Fact.EXTERNAL_CONSENT: (
        "no_external_consent",
        "No active consent discloses the patient to this external participant.",
    ),
    Fact.BREAK_GLASS: (
        "no_break_glass",
        "Emergency (break-the-glass) access to this patient is not open for you.",
    ),
    Fact.SMS_FULL_TEXT_GROUP: (
        "not_in_sms_full_text_group",
        "The recipient's organization is in no compliance group that policies/sms.toml allows "
        "full-text SMS for; a notification without clinical content is sent instead.",
    ),
    Fact.TREATABLE: (
        "not_treatable",
        "The patient is not one your organization treats (neither its own nor disclosed to it for "
        "treatment).",
    ),
    Fact.SHARED: (
        "not_shared",
        "The record belongs to another organization, which has not shared it with yours.",
    ),
    Fact.PROPOSED_BY_SELF: (
        "not_proposer",
        "Only the person who proposed this policy change may withdraw it.",
    ),
    Fact.PROPOSED_BY_OTHER: (
        "own_proposal",
        "You proposed this policy change: a second compliance officer must approve or reject it.",
    ),
    Fact.GOVERNING: (
        "not_governing_organization",
        "The policy decides for every organization of this deployment: only the organization that "
        "governs it (policy.governing_organization) may change it.",
    ),
    Fact.SENDER: ("not_sender", "Only the person who sent the message may do this."),
    Fact.RECALL_WINDOW: (
        "recall_window_passed",
        "The message was sent longer ago than the recall window the policy allows.",
    ),
}

ROLE_NOT_PERMITTED = ("role_not_permitted", "Your role is not permitted to do this.")
#: A purpose of use the client stated that the workflow, or every consent that would cover it, does
#: not allow.
PURPOSE_NOT_PERMITTED = (
    "purpose_not_permitted",
    "The stated purpose of use (X-Purpose-Of-Use) is not one this action, or the consent that would "
    "cover it, allows.",
)
UNKNOWN_WORKFLOW = ("unknown_workflow", "This action is not declared in the policy.")


@dataclass(frozen=True)
class Decision:
    """The outcome of one policy evaluation. Deny is the default: ``allowed`` is only ever set by a rule."""

    allowed: bool
    workflow: str
    role: str
    reason: str
    rule: str | None = None
    hint: str | None = None
    policy_version: str = ""
    missing: tuple[str, ...] = ()
    #: The facts it was decided on, recorded with it so ``caremsg policy diff`` can decide it again;
    #: None when they were not computed (a role refused before any lookup).
    facts: frozenset[str] | None = None

    @property
    def decision(self) -> str:
        return "allow" if self.allowed else "deny"
