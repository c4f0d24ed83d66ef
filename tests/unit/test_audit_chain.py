"""The chain's rules without a database: digests, links, how a walk judges each kind of tampering,
keyed hashes of identifiers, and signed anchors."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.audit_chain import (
    CONTENT_FIELDS,
    CONTENT_VERSION,
    DIGEST_FIELDS,
    GENESIS_HASH,
    ChainHead,
    ChainWalk,
    IdentifierHasher,
    Problem,
    content_digest,
    digest_of_values,
    extend,
    first_problem,
    link,
    link_hash,
)
from integrations.audit_anchor import AnchorError, public_key, sign_anchor, verify_anchor

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def content(i: int, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(CONTENT_FIELDS)
    base.update(
        occurred_at=T0 + timedelta(seconds=i),
        event="decision",
        workflow="patient.read",
        outcome="success",
        actor_id=i,
        break_glass=False,
        details={"consent_id": i},
    )
    base.update(changes)
    return base


def chain(n: int) -> tuple[list[dict[str, Any]], list[Any]]:
    contents = [content(i) for i in range(1, n + 1)]
    return contents, extend(ChainHead(), [(10 * i, c) for i, c in enumerate(contents, 1)])


def walk(
    entries: list[Any], contents: dict[int, dict[str, Any] | None], lookup: Any = None
) -> Problem | None:
    w = ChainWalk()
    for entry in entries:
        found = contents.get(entry.event_id)
        moved = lookup(found) if lookup and found is not None else None
        problem = w.check(entry, found, moved)
        if problem:
            return problem
    return None


#: An event with every field set, a non-UTC offset with microseconds, quotes, a backslash, a tab, a
#: non-ASCII character and nested details; and one with most fields missing. Their digests and links
#: were computed by the first release of the chain: every sealed trail depends on these bytes.
PINNED_FULL: dict[str, Any] = {
    "occurred_at": datetime(2026, 3, 1, 13, 0, 0, 250, tzinfo=timezone(timedelta(hours=1))),
    "request_id": "req-0001",
    "actor_id": 42,
    "actor_role": "care_team_member",
    "organization_id": 7,
    "source_address": "10.0.0.7",
    "event": "decision",
    "workflow": "patient.read",
    "resource_type": "patient",
    "resource_id": "9",
    "patient_id": 9,
    "decision": "allow",
    "matched_rule": 'roles.csv:31: "care_team_member", patient.read \\ covered \u2014 ok\t',
    "reason": "allowed",
    "policy_version": "abc123",
    "purpose": "treatment",
    "break_glass": True,
    "outcome": "success",
    "details": {"consent_id": 3, "note": "fen\u00eatre\n", "nested": {"b": [1, 2.5, None], "a": False}},
    "subject_hash": None,
}
PINNED_SPARSE: dict[str, Any] = {
    "occurred_at": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    "event": "decision",
    "workflow": "auth.login",
    "outcome": "denied",
    "details": {},
}


def test_the_digests_and_links_of_known_events_never_change() -> None:
    full = content_digest(PINNED_FULL)
    assert full == "2b35e98adc8cd535b34fe3a63d3dcc96bec8ac654fa30ce4631bef1839447a82"
    assert content_digest(PINNED_SPARSE) == "2e1d87df12a80137381e2ce37ddb601beede613771c5b6f17afa2e3b09bd441a"
    assert link_hash(1, 10, full, GENESIS_HASH) == (
        "f69a5acc9ce6d7282317c9f6f3cc32e14db74f4d65efe0b6d2774b7b1c761a5c"
    )
    entries = extend(ChainHead(), [(10, PINNED_FULL), (11, PINNED_SPARSE)])
    assert entries[1].hash == "cc8cdd8b85fe51af0231b1852a8dbca02ce5b038340e154744a2c4382d715728"


def reference_hash(body: dict[str, object]) -> str:
    """The chain's hashes as first written: json.dumps of the whole object, then SHA-256."""

    def default(obj: object) -> str:
        if isinstance(obj, datetime):
            return obj.astimezone(UTC).isoformat()
        raise TypeError(f"not canonicalisable: {type(obj).__name__}")

    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=default)
    return hashlib.sha256(text.encode()).hexdigest()


class Colour(enum.IntEnum):
    RED = 1


class Word(enum.StrEnum):
    HELLO = "hello"


AWKWARD = [
    None,
    True,
    False,
    0,
    -7,
    2**70,
    Colour.RED,
    1.5,
    -0.0,
    1e300,
    float("inf"),
    float("nan"),
    "",
    'quote " backslash \\ slash / percent %s %d',
    "".join(chr(c) for c in range(32)) + "\x7f",
    "\u2028\u2029 \u00e9\u6f22\U0001f642",
    Word.HELLO,
    datetime(2026, 3, 1, 12, 0),  # noqa: DTZ001 - naive: read as local time, by both
    datetime(2026, 3, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    datetime.max.replace(tzinfo=UTC),
    {},
    {"b": 1, "a": [1, {"d": None, "c": "x"}], "\u00fc": 2, "Z": 3.25, "": True},
    [],
    [1, "a", None, [2.5]],
]


@pytest.mark.parametrize("value", AWKWARD, ids=repr)
def test_every_field_holding_any_value_digests_as_the_general_json_encoder_would(value: object) -> None:
    for name in CONTENT_FIELDS:
        event = {**PINNED_FULL, name: value}
        expected = reference_hash({**event, "v": CONTENT_VERSION})
        assert content_digest(event) == expected, name
        assert digest_of_values([event[f] for f in DIGEST_FIELDS]) == expected, name


def test_a_value_json_cannot_write_is_refused_as_before() -> None:
    with pytest.raises(TypeError, match="not canonicalisable: date"):
        content_digest({**PINNED_FULL, "details": {"on": date(2026, 3, 1)}})
    with pytest.raises(TypeError, match="not canonicalisable: date"):
        content_digest({**PINNED_FULL, "purpose": date(2026, 3, 1)})


@pytest.mark.parametrize(
    ("digest", "prev"),
    [
        ("a" * 64, GENESIS_HASH),
        ('forged"digest', "b" * 64),
        ("ab\\cd", "\u00e9t\u00e9"),
        ("", " spaced "),
    ],
)
def test_a_link_hashes_as_the_general_json_encoder_would_even_over_tampered_values(
    digest: str, prev: str
) -> None:
    for seq, event_id in ((1, 10), (2**63 - 1, 0), (True, Colour.RED)):
        expected = reference_hash({"digest": digest, "event_id": event_id, "prev": prev, "seq": seq})
        assert link_hash(seq, event_id, digest, prev) == expected


def test_linking_digests_chains_exactly_as_extending_with_contents() -> None:
    contents = [content(i) for i in range(1, 6)]
    head = ChainHead(7, "c" * 64, 70)
    by_content = extend(head, [(100 + i, c) for i, c in enumerate(contents)])
    by_digest = link(head, [(100 + i, content_digest(c)) for i, c in enumerate(contents)])
    assert by_digest == by_content
    assert [e.seq for e in by_digest] == [8, 9, 10, 11, 12]


def test_the_digest_ignores_key_order_and_names_every_field() -> None:
    a = content(1)
    b = dict(reversed(list(a.items())))
    assert content_digest(a) == content_digest(b)
    assert content_digest(a) != content_digest({**a, "reason": "allowed"})
    assert content_digest(a) != content_digest({**a, "details": {"consent_id": 2}})


def test_the_digest_reads_the_same_instant_the_same_in_any_time_zone() -> None:
    shifted = T0.astimezone(ZoneInfo("America/New_York"))
    assert content_digest(content(0, occurred_at=T0)) == content_digest(content(0, occurred_at=shifted))


def test_the_first_entry_follows_the_genesis_hash_and_each_entry_its_predecessor() -> None:
    _, entries = chain(3)
    assert entries[0].prev_hash == GENESIS_HASH
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[1].prev_hash == entries[0].hash
    assert entries[2].prev_hash == entries[1].hash
    more = extend(ChainHead(3, entries[2].hash, 30), [(40, content(4))])
    assert (more[0].seq, more[0].prev_hash) == (4, entries[2].hash)


def test_an_intact_chain_walks_clean() -> None:
    contents, entries = chain(5)
    assert walk(entries, {e.event_id: c for e, c in zip(entries, contents, strict=True)}) is None


def test_an_edited_record_is_named() -> None:
    contents, entries = chain(5)
    stored: dict[int, dict[str, Any] | None] = {e.event_id: c for e, c in zip(entries, contents, strict=True)}
    stored[30] = content(3, outcome="denied")
    problem = walk(entries, stored)
    assert problem == Problem("edited", 30, 3, "the record's content changed after sealing")


def test_a_missing_record_is_named_deleted() -> None:
    contents, entries = chain(5)
    stored: dict[int, dict[str, Any] | None] = {e.event_id: c for e, c in zip(entries, contents, strict=True)}
    stored[40] = None
    problem = walk(entries, stored)
    assert problem is not None
    assert (problem.kind, problem.event_id, problem.seq) == ("deleted", 40, 4)


def test_a_missing_entry_is_a_gap_named_by_its_seq_and_neighbours() -> None:
    contents, entries = chain(5)
    stored = {e.event_id: c for e, c in zip(entries, contents, strict=True)}
    problem = walk([e for e in entries if e.seq != 2], dict(stored))
    assert problem is not None
    assert (problem.kind, problem.seq) == ("deleted", 2)
    assert "after record id 10" in problem.detail
    assert "before record id 30" in problem.detail


def test_swapped_records_are_named_reordered_with_where_the_content_belongs() -> None:
    contents, entries = chain(5)
    stored: dict[int, dict[str, Any] | None] = {e.event_id: c for e, c in zip(entries, contents, strict=True)}
    stored[20], stored[40] = stored[40], stored[20]
    by_digest = {e.digest: e for e in entries}
    problem = walk(entries, stored, lookup=lambda c: by_digest.get(content_digest(c)))
    assert problem is not None
    assert (problem.kind, problem.event_id, problem.seq) == ("reordered", 20, 2)
    assert "record id 40 (seq 4)" in problem.detail


def test_an_entry_moved_to_another_position_is_named_reordered() -> None:
    contents, entries = chain(4)
    stored = {e.event_id: c for e, c in zip(entries, contents, strict=True)}
    moved = [entries[0], replace(entries[2], seq=2), replace(entries[1], seq=3), entries[3]]
    w = ChainWalk()
    assert w.check(moved[0], stored[10]) is None
    problem = w.check(moved[1], stored[30], origin_seq=3)
    assert problem is not None
    assert (problem.kind, problem.event_id, problem.seq) == ("reordered", 30, 2)


def test_an_inserted_record_comes_first_when_it_sits_before_the_chain_problem() -> None:
    late = Problem("edited", 90, 9, "x")
    assert first_problem(late, 35, 3) is not None
    assert first_problem(late, 35, 3).kind == "inserted"  # type: ignore[union-attr]
    assert first_problem(late, 95, 9) == late
    assert first_problem(None, 35, 3).event_id == 35  # type: ignore[union-attr]
    assert first_problem(None, None, None) is None


def test_an_email_hashes_the_same_whatever_its_case_and_differently_under_another_key() -> None:
    hasher = IdentifierHasher(b"k" * 32)
    assert hasher.email(" Ann@Example.org ") == hasher.email("ann@example.org")
    assert len(hasher.email("ann@example.org")) == 64
    assert "ann" not in hasher.email("ann@example.org")
    assert IdentifierHasher(b"j" * 32).email("ann@example.org") != hasher.email("ann@example.org")
    with pytest.raises(ValueError, match="32 bytes"):
        IdentifierHasher(b"short")


def test_an_anchor_verifies_with_the_public_key_alone_and_not_once_altered() -> None:
    key = Ed25519PrivateKey.generate()
    document = sign_anchor(ChainHead(12, "ab" * 32, 340), key, T0)
    checkpoint = verify_anchor(document, public_key(document["publicKey"]))
    assert (checkpoint.seq, checkpoint.event_id, checkpoint.hash) == (12, 340, "ab" * 32)

    with pytest.raises(AnchorError, match="altered"):
        verify_anchor({**document, "hash": "cd" * 32}, key.public_key())
    with pytest.raises(AnchorError, match="not by the given key"):
        verify_anchor(document, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(AnchorError, match="not an audit anchor"):
        verify_anchor({"seq": "twelve"}, key.public_key())
