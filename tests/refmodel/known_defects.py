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

from tests.refmodel import model as m
from tests.refmodel.driver import Outcome

#: Issue 9's decision defects, by their number there.
DEFECTS = {
    "1": "an organization consent (or a claimed organization) admits an external SMS participant "
    "whatever its scope and purpose",
    "2": "a consent can name another organization's compliance group",
    "8": "break-the-glass is open to a patient one's organization may never treat",
    "9": "a read-only consent allows writes (no write scope)",
    "12": "a record the caller has no relation to answers 403 with a reason, not 404",
}

#: The defects main still has (as of the last merge); their disagreements are tallied, not failed.
EXEMPT = frozenset({"1", "2", "8", "9", "12"})


def exempted() -> frozenset[str]:
    configured = os.environ.get("CAREMSG_REFMODEL_KNOWN_DEFECTS")
    if configured is None:
        return EXEMPT
    return frozenset(part.strip() for part in configured.split(",") if part.strip())


def explain(world: m.World, action: m.Action, v: m.Verdict, out: Outcome) -> str | None:
    """The known defect this disagreement is an instance of, or None."""
    if isinstance(action, m.RecordConsent):
        if "write" in action.scope and out.status == 422:
            return "9"
        if (
            action.kind == "compliance_group"
            and world.groups[action.target].owner != world.patients[action.patient]
        ):
            return "2"
    if isinstance(action, m.CreateConversation) and action.externals:
        external_denied = (v.field or "").startswith("externalMembers")
        external_consent_differs = any(s.role == m.EXTERNAL for s in v.subjects) and out.status == v.status
        if (external_denied and out.status == 201) or external_consent_differs:
            return "1"
    if (
        isinstance(action, m.ConversationAction)
        and action.workflow == "message.send"
        and v.deliveries
        and out.status == v.status
    ):
        return "1"
    if action.workflow == "break_glass.open" and (out.status == 201 or v.allowed):
        # Allowed by `break_glass.open, any` where the model needs the patient to be one the
        # person's organization may treat (the rule then names `covered`).
        return "8"
    if (
        isinstance(action, m.UpdatePatient)
        and world.patients[action.patient] != world.users[action.actor].org
        and not v.allowed
        and out.status == 200
    ):
        return "9"
    if v.status == 404 and out.status == 403 and not v.undecided:
        return "12"
    return None
