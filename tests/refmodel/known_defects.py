"""Known defects of issue 9 that the service still has, each recognised by a narrow predicate.

A disagreement with the model is excused only when the defect that explains it is exempted, and
only the action it happened on; the scenario stops there (the service's world has left the model's).
Any other disagreement fails the test. Exemptions are the ``EXEMPT`` set below; the environment
variable ``CAREMSG_REFMODEL_KNOWN_DEFECTS`` replaces it (a comma-separated list of ids, empty for
none), which is how to see what the model reports for a defect:

    CAREMSG_REFMODEL_KNOWN_DEFECTS= ./run.sh test tests/refmodel -q -x

Remove an id from ``EXEMPT`` when its fix lands: ``test_each_exempted_defect_is_still_there``
fails (strictly) for a defect that is exempted but no longer present.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

from tests.refmodel import model as m
from tests.refmodel.driver import Outcome

#: Issue 9's decision defects (by their number there) and the fact builder's promises.
DEFECTS = {
    "1": "an organization consent (or a claimed organization) admits and texts an external SMS "
    "participant whatever its scope and purpose",
    "2": "a consent can name another organization's compliance group",
    "3": "break_glass is not computed on the conversation paths (their records are not flagged)",
    "8": "break-the-glass is open to a patient one's organization may never treat",
    "9": "a read-only consent allows writes (no write scope), and a stated purpose of use is never checked",
    "10": "an SMS reply from a number in several conversations is posted where it was texted last "
    "instead of being held and asked back",
    "11": "listings show staff every organization and compliance group, not only what they can act on",
    "12": "a record or person the caller has no relation to answers 403 with a reason, not as nonexistent",
    "choice": "when several consents qualify, the one recorded is not the documented choice",
}

#: The defects main still has (as of the last merge); their disagreements are tallied, not failed.
EXEMPT: frozenset[str] = frozenset()


def covered_by(defect: str, exempt: frozenset[str]) -> bool:
    """Whether every defect of ``defect`` (``9+12``: both at once) is exempted."""
    return all(part in exempt for part in defect.split("+"))


def exempted() -> frozenset[str]:
    configured = os.environ.get("CAREMSG_REFMODEL_KNOWN_DEFECTS")
    if configured is None:
        return EXEMPT
    return frozenset(part.strip() for part in configured.split(",") if part.strip())


def explain(
    world: m.World,
    action: m.Action,
    v: m.Verdict,
    out: Outcome,
    problems: list[tuple[str, str]],
    recheck: Callable[[m.Verdict], list[tuple[str, str]]],
) -> str | None:
    """The known defect this disagreement is an instance of, or None. Each predicate names the
    action and the kinds of disagreement the defect produces, nothing wider; ``recheck`` compares
    the service's answer with another verdict (the model with a defect's feature taken out)."""
    kinds = {kind for kind, _ in problems}
    answer = {"status", "reason", "field"}
    if (
        v.status in {404, 422}
        and out.status == 403
        and kinds <= answer | {"member.count", "member.decision", "member.reason"}
    ):
        return "12"
    if action.purpose_of_use is not None:
        # The stated purpose is recorded but never checked: the service answers as if none was stated
        # (the audit still names the stated purpose).
        plain = replace(action, purpose_of_use=None)
        unstated = m.verdict(world, plain)
        if replace(unstated, purpose=v.purpose) == v:
            return explain(world, plain, v, out, problems, recheck)  # the purpose changed nothing
        rest = [p for p in recheck(unstated) if p[0] != "audit.purpose"]
        if not rest:
            return "9"
        other = explain(world, plain, unstated, out, rest, recheck)
        if other is not None:
            return f"9+{other}"  # two known defects in one answer
    if isinstance(action, m.RecordConsent):
        if "write" in action.scope and out.status == 422:
            return "9"
        if (
            action.kind == "compliance_group"
            and world.groups[action.target].owner != world.patients[action.patient]
        ):
            return "2"
    if action.workflow == "break_glass.open":
        return "8"
    externals = answer | {"external.decision", "external.consent", "external.reason"}
    if isinstance(action, m.CreateConversation) and action.externals and kinds <= externals:
        return "1"
    if action.workflow in {"message.send", "message.send_urgent"} and kinds == {"deliveries"}:
        return "1"
    if (
        action.workflow in {"patient.update", "care_team.add_member"}
        and isinstance(action, m.PatientAction)
        and world.patients[action.patient] != world.users[action.actor].org
        and kinds
        <= answer | {"audit.decision", "audit.rule", "audit.consent", "audit.purpose", "audit.reason"}
    ):
        return "9"
    if (
        action.workflow in {"patient.read", "care_team.read"}
        and isinstance(action, m.PatientAction)
        and (action.actor, action.patient) in world.break_glass
        and kinds
        <= answer | {"audit.decision", "audit.rule", "audit.reason", "audit.consent", "audit.purpose"}
    ):
        return "8"
    if (
        action.workflow == "patient.list"
        and kinds == {"listing"}
        and any(user == action.actor for user, _ in world.break_glass)
    ):
        return "8"  # a patient read under break-the-glass alone is listed
    if action.workflow in {"organization.list", "compliance_group.list"} and kinds == {"listing"}:
        return "11"
    if action.workflow in {"conversation.read", "message.send", "message.send_urgent"} and kinds == {
        "audit.break_glass"
    }:
        return "3"
    if kinds <= {"audit.consent", "audit.purpose", "member.consent", "external.consent"}:
        return "choice"
    return None


def explain_reply(v: m.ReplyVerdict, problems: list[tuple[str, str]]) -> str | None:
    """The known defect a disagreement about an SMS reply is an instance of, or None: the model holds
    the reply (several active conversations, no code or one the number does not have) and the
    service decided it in one of them instead, without holding it."""
    kinds = {kind for kind, _ in problems}
    guessed = {
        "reply.decided",
        "reply.decision",
        "reply.consent",
        "reply.posted",
        "reply.held",
        "reply.question",
    }
    if (v.held or v.held_one_of) and "reply.decided" in kinds and kinds <= guessed:
        return "10"
    return None
