"""The in-memory consent index decides `covered` exactly like the consent rules say, at the moment
of the decision: recipient (organization or compliance group), scope, purpose, effective and expiry
times, and revocation; late or repeated changes never undo newer ones."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from engine.consent_index import ConsentIndex, Coverage, IndexedConsent, pack_rows, purpose_mask, scope_mask
from engine.model import RecipientType

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
PATIENT, ORG, OTHER_ORG, GROUP = 7, 100, 200, 300
READ = scope_mask(["read"])
MESSAGE = scope_mask(["message"])


def consent(
    consent_id: int = 1,
    *,
    recipient: int = ORG,
    kind: RecipientType = RecipientType.ORGANIZATION,
    scope: frozenset[str] = frozenset({"read", "message", "sms"}),
    purpose: str = "treatment",
    effective: datetime = NOW - timedelta(days=1),
    expires: datetime | None = None,
    patient: int = PATIENT,
) -> IndexedConsent:
    return IndexedConsent(consent_id, patient, kind, recipient, scope, purpose, effective, expires)


def index_with(*consents: IndexedConsent, groups: dict[int, list[int]] | None = None) -> ConsentIndex:
    index = ConsentIndex()
    index.replace_all(consents, groups or {}, NOW, seq=0)
    return index


def test_a_consent_covers_its_organization_and_no_other() -> None:
    index = index_with(consent())
    covering = index.covering(PATIENT, ORG, NOW)
    assert covering is not None
    assert covering.consent_id == 1
    assert covering.purpose == "treatment"
    assert index.covering(PATIENT, OTHER_ORG, NOW) is None
    assert index.covering(PATIENT + 1, ORG, NOW) is None


def test_a_compliance_group_consent_covers_every_member_organization() -> None:
    index = index_with(
        consent(recipient=GROUP, kind=RecipientType.COMPLIANCE_GROUP), groups={GROUP: [ORG, OTHER_ORG]}
    )
    assert index.covering(PATIENT, ORG, NOW) is not None
    assert index.covering(PATIENT, OTHER_ORG, NOW) is not None
    assert index.covering(PATIENT, 999, NOW) is None


def test_a_group_id_equal_to_an_organization_id_is_not_confused_with_it() -> None:
    index = index_with(consent(recipient=ORG, kind=RecipientType.COMPLIANCE_GROUP), groups={ORG: [OTHER_ORG]})
    assert index.covering(PATIENT, ORG, NOW) is None
    assert index.covering(PATIENT, OTHER_ORG, NOW) is not None


def test_a_consent_stops_covering_the_second_it_expires_without_any_change_to_the_index() -> None:
    ends = NOW + timedelta(seconds=30, milliseconds=500)
    index = index_with(consent(expires=ends))
    assert index.covering(PATIENT, ORG, ends - timedelta(milliseconds=1)) is not None
    assert index.covering(PATIENT, ORG, ends) is None


def test_a_consent_starts_covering_on_its_effective_date() -> None:
    starts = NOW + timedelta(hours=1)
    index = index_with(consent(effective=starts))
    assert index.covering(PATIENT, ORG, NOW) is None
    assert index.covering(PATIENT, ORG, starts) is not None


def test_a_consent_covers_only_the_scope_it_discloses() -> None:
    index = index_with(consent(scope=frozenset({"read"})))
    assert index.covering(PATIENT, ORG, NOW, scope=READ) is not None
    assert index.covering(PATIENT, ORG, NOW, scope=MESSAGE) is None


def test_a_consent_covers_only_the_purposes_a_workflow_accepts() -> None:
    index = index_with(consent(purpose="payment"))
    assert (
        index.covering(PATIENT, ORG, NOW, purposes=purpose_mask(["treatment", "care_coordination"])) is None
    )
    assert index.covering(PATIENT, ORG, NOW, purposes=purpose_mask(["payment"])) is not None
    assert index.covering(PATIENT, ORG, NOW, purposes=purpose_mask([])) is not None


def test_excluding_a_consent_asks_who_is_covered_without_it() -> None:
    index = index_with(consent(1), consent(2, purpose="care_coordination"))
    remaining = index.covering(PATIENT, ORG, NOW, exclude=1)
    assert remaining is not None
    assert remaining.consent_id == 2


def test_a_revocation_removes_the_consent_and_a_late_older_change_does_not_bring_it_back() -> None:
    index = index_with()
    index.apply(5, 1, PATIENT, consent(1), NOW)
    assert index.covering(PATIENT, ORG, NOW) is not None
    assert index.apply(6, 1, PATIENT, None, NOW)
    assert index.covering(PATIENT, ORG, NOW) is None
    assert not index.apply(5, 1, PATIENT, consent(1), NOW)  # the "recorded" notification, late
    assert index.covering(PATIENT, ORG, NOW) is None
    assert len(index) == 0
    assert index.patients() == 0


def test_changes_older_than_the_snapshot_are_ignored() -> None:
    index = ConsentIndex()
    index.replace_all([consent(1)], {}, NOW, seq=10)
    assert not index.apply(9, 1, PATIENT, None, NOW)
    assert index.covering(PATIENT, ORG, NOW) is not None


def test_a_reload_from_an_older_snapshot_keeps_the_changes_applied_after_it() -> None:
    """A reconnection reloads while requests go on: a revocation (change 11) recorded here after the
    snapshot (as of change 10) was read must not be undone by swapping the snapshot in, nor must a
    consent recorded meanwhile (change 12) disappear until its notification comes round."""
    index = index_with(consent(1), dataclasses.replace(consent(3, recipient=OTHER_ORG), part2=True))
    index.set_group(GROUP, [ORG])  # a group created after the snapshot, with a consent naming it
    assert index.apply(11, 1, PATIENT, None, NOW)
    assert index.apply(
        12,
        2,
        PATIENT,
        dataclasses.replace(consent(2, recipient=GROUP, kind=RecipientType.COMPLIANCE_GROUP), part2=True),
        NOW,
    )
    assert index.apply(13, 3, PATIENT, None, NOW)
    snapshot = [consent(1), dataclasses.replace(consent(3, recipient=OTHER_ORG), part2=True)]

    index.replace_all(snapshot, {}, NOW, seq=10)

    assert index.covering(PATIENT, ORG, NOW) == Coverage(2, "treatment")  # the group's, not 1
    assert index.covering(PATIENT, OTHER_ORG, NOW) is None
    assert [c.part2 for c in index.candidates(PATIENT, ORG)] == [True]
    # The notifications of those changes, when they come, change nothing; an older one neither.
    assert not index.apply(11, 1, PATIENT, consent(1), NOW)
    assert not index.apply(13, 3, PATIENT, consent(3), NOW)
    assert index.covering(PATIENT, OTHER_ORG, NOW) is None
    # A later snapshot that holds them all takes over.
    index.replace_all(
        [consent(2, recipient=GROUP, kind=RecipientType.COMPLIANCE_GROUP)], {GROUP: [ORG]}, NOW, seq=13
    )
    assert index.covering(PATIENT, ORG, NOW) == Coverage(2, "treatment")
    assert index.apply(14, 1, PATIENT, consent(1), NOW)


def test_several_consents_of_one_patient_are_kept_and_removed_one_by_one() -> None:
    index = index_with()
    for n, org in enumerate((ORG, OTHER_ORG, 300), start=1):
        index.put(consent(n, recipient=org), NOW)
    assert len(index) == 3
    assert index.patients() == 1
    index.remove(2, PATIENT)
    assert index.covering(PATIENT, OTHER_ORG, NOW) is None
    assert index.covering(PATIENT, ORG, NOW) is not None
    assert index.covering(PATIENT, 300, NOW) is not None


def test_the_index_knows_which_consents_are_part2_through_every_kind_of_load() -> None:
    part2, plain = dataclasses.replace(consent(1), part2=True), consent(2, recipient=OTHER_ORG)
    replaced = index_with(part2, plain)
    applied = ConsentIndex()
    applied.apply(1, 1, PATIENT, part2, NOW)
    applied.apply(2, 2, PATIENT, plain, NOW)
    packed = ConsentIndex()
    rows = [(PATIENT, c.consent_id, c.pack(NOW) & ((1 << 39) - 1), 0, 0) for c in (part2, plain)]
    packed.load_packed(pack_rows(rows), {}, 0, part2_ids=[1])

    for index in (replaced, applied, packed):
        assert [c.part2 for c in index.candidates(PATIENT, ORG)] == [True]
        assert [c.part2 for c in index.candidates(PATIENT, OTHER_ORG)] == [False]
    applied.apply(3, 1, PATIENT, None, NOW)  # revoked: forgotten
    applied.apply(4, 1, PATIENT, dataclasses.replace(part2, part2=False), NOW)
    assert [c.part2 for c in applied.candidates(PATIENT, ORG)] == [False]
