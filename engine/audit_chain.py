"""The audit hash chain: canonical content, digests, links, and how a verifier judges what it reads.

Why the chain is built this way
-------------------------------
Requests never touch the chain. A workflow inserts its audit events, unchained, in its own
transaction (fail closed, see ``integrations.db.uow``); a background *sealer* (one per service
process, several processes are safe) later appends them to the chain in batches, in id order, in a
table of its own (``audit_chain``). So there is no global lock that every request waits on, and the
event rows are never updated: ``audit_events`` stays strictly append-only.

Each chain entry ``n`` holds the event's id, the SHA-256 ``digest`` of the event's canonical
content (every stored field but the id, see :data:`CONTENT_FIELDS`), and::

    hash[n] = SHA-256(canonical JSON {"digest", "event_id", "prev", "seq"}),  prev = hash[n-1]

The digest is kept apart from the link so the verifier can tell an edited record (its content
matches no digest) from a moved one (its content matches the digest sealed for another record).
There is one chain for the whole trail: sealing is batched, so one chain costs the requests nothing,
and a single total order lets one signed checkpoint (an *anchor*) cover every record.

The sealer seals an event only once no transaction can still commit an event with a smaller id
(``integrations.audit_sealer`` explains the lock that gives it that horizon). Hence, on a sound
trail, every event at or below the highest sealed id is in the chain, and an unchained event below
it can only have been inserted behind the sealer's back.

A hash chain alone does not stop someone who can rewrite the whole table and recompute every hash:
anchors (checkpoints of the head signed with Ed25519, kept outside the database) do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, Literal

#: The event fields the digest covers, in the order they are documented (the JSON is sorted anyway).
#: Adding a field here changes every digest: a new field needs a new content version instead.
CONTENT_FIELDS: tuple[str, ...] = (
    "occurred_at",
    "request_id",
    "actor_id",
    "actor_role",
    "organization_id",
    "source_address",
    "event",
    "workflow",
    "resource_type",
    "resource_id",
    "patient_id",
    "decision",
    "matched_rule",
    "reason",
    "policy_version",
    "purpose",
    "break_glass",
    "outcome",
    "details",
    "subject_hash",
)
CONTENT_VERSION = 1
GENESIS_HASH = "0" * 64

ProblemKind = Literal["edited", "deleted", "inserted", "reordered"]


def _datetime_json(obj: object) -> str:
    if isinstance(obj, datetime):
        return obj.astimezone(UTC).isoformat()
    raise TypeError(f"not canonicalisable: {type(obj).__name__}")


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_datetime_json
)


def canonical_json(value: object) -> bytes:
    """One byte string per value: sorted keys, no whitespace, UTF-8; datetimes as UTC ISO 8601."""
    return _CANONICAL.encode(value).encode()


# --- the same bytes, without the general encoder ----------------------------------------------------
# Every sealed event and every verified one is hashed twice (content, link), and json.dumps of those
# two objects was over 40 % of the sealer's CPU per event. The chain's JSON objects have fixed keys,
# so each is a template whose values are encoded one by one, by the very functions the json module
# calls for their exact type; any other type goes to the general encoder. The bytes are those of
# canonical_json: tests/unit/test_audit_chain.py pins known digests and compares the two on awkward
# values of every field.


def _json_datetime(value: datetime) -> str:
    return f'"{value.astimezone(UTC).isoformat()}"'  # digits, "-", ":", "T", "." and "+": no escapes


def _json_dict(value: dict[Any, Any]) -> str:
    return _CANONICAL.encode(value) if value else "{}"


#: By exact type (so a bool is not taken for an int, nor a str subclass for a str).
_JSON_OF_TYPE: dict[type, Callable[[Any], str]] = {
    str: encode_basestring,  # what the encoder calls for a str when ensure_ascii is off
    int: int.__repr__,  # what it calls for an int
    bool: ("false", "true").__getitem__,
    type(None): "null".format,  # "null", whatever the argument
    datetime: _json_datetime,  # what ``default`` returns, as a JSON string
    dict: _json_dict,
}


def _json_value(value: object) -> str:
    return _JSON_OF_TYPE.get(type(value), _CANONICAL.encode)(value)


def _template(fields: Iterable[str], constants: Mapping[str, object]) -> str:
    """The canonical JSON object with these keys (sorted), ``%s`` for each field's value."""
    keys = sorted([*fields, *constants])
    items = (f"{encode_basestring(k)}:{_json_value(constants[k]) if k in constants else '%s'}" for k in keys)
    return "{" + ",".join(items) + "}"


#: :data:`CONTENT_FIELDS` in the order the canonical JSON has them (sorted): the order
#: :func:`digest_of_values` takes the values in, and a reader can select the columns in.
DIGEST_FIELDS: tuple[str, ...] = tuple(sorted(CONTENT_FIELDS))
_CONTENT = _template(DIGEST_FIELDS, {"v": CONTENT_VERSION})
_LINK = _template(("digest", "event_id", "prev", "seq"), {})


def content_digest(content: Mapping[str, object]) -> str:
    """SHA-256 of an event's canonical content: the :data:`CONTENT_FIELDS`, missing ones as null."""
    return digest_of_values([content.get(name) for name in DIGEST_FIELDS])


def digest_of_values(values: Iterable[object]) -> str:
    """:func:`content_digest` of the content whose :data:`DIGEST_FIELDS` are ``values``, in that
    order: a database row read in that order needs no dict."""
    body = _CONTENT % tuple([_JSON_OF_TYPE.get(type(v), _CANONICAL.encode)(v) for v in values])
    return hashlib.sha256(body.encode()).hexdigest()


def link_hash(seq: int, event_id: int, digest: str, prev_hash: str) -> str:
    """The hash of chain entry ``seq``: binds its position, its event id, its content and its past."""
    if type(seq) is type(event_id) is int and type(digest) is type(prev_hash) is str:
        hexes = digest + prev_hash
        if hexes.isascii() and hexes.isalnum():  # hex digests: JSON writes them as they are
            body = f'{{"digest":"{digest}","event_id":{event_id},"prev":"{prev_hash}","seq":{seq}}}'
            return hashlib.sha256(body.encode()).hexdigest()
    # What a tampered chain entry may hold.
    body = _LINK % (_json_value(digest), _json_value(event_id), _json_value(prev_hash), _json_value(seq))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class ChainEntry:
    seq: int
    event_id: int
    digest: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainHead:
    """The last sealed entry (``seq`` 0 and the genesis hash for an empty chain)."""

    seq: int = 0
    hash: str = GENESIS_HASH
    event_id: int = 0


def extend(head: ChainHead, events: list[tuple[int, Mapping[str, object]]]) -> list[ChainEntry]:
    """Chain ``(event_id, content)`` pairs, in the order given, after ``head``."""
    return link(head, [(event_id, content_digest(content)) for event_id, content in events])


def link(head: ChainHead, digests: Sequence[tuple[int, str]]) -> list[ChainEntry]:
    """Chain ``(event_id, digest)`` pairs, in the order given, after ``head``: :func:`extend` for a
    caller that computed the digests itself (with :func:`digest_of_values`)."""
    entries: list[ChainEntry] = []
    prev, seq = head.hash, head.seq
    for event_id, digest in digests:
        seq += 1
        entry = ChainEntry(seq, event_id, digest, prev, link_hash(seq, event_id, digest, prev))
        entries.append(entry)
        prev = entry.hash
    return entries


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with the trail, named by record id and chain position where known."""

    kind: ProblemKind
    event_id: int | None
    seq: int | None
    detail: str

    def describe(self) -> str:
        where = []
        if self.event_id is not None:
            where.append(f"record id {self.event_id}")
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        return f"{self.kind.upper()}: {', '.join(where)}: {self.detail}"


class ChainWalk:
    """Judges chain entries one by one, in ``seq`` order, against the events they name.

    ``check`` returns the first :class:`Problem` an entry shows, or None. An event whose content
    matches its own digest but another entry's position, or an entry out of its place, is
    ``reordered``; content that matches no digest is ``edited``; a missing event or a gap in the
    numbering is ``deleted``. Whether edited content belongs to another entry is the caller's
    lookup (``moved_from``), because only the caller can search the whole chain.
    """

    def __init__(self) -> None:
        self.previous = ChainHead()
        self.checked = 0

    def check(
        self,
        entry: ChainEntry,
        content: Mapping[str, object] | None,
        moved_from: ChainEntry | None = None,
        origin_seq: int | None = None,
    ) -> Problem | None:
        """Judge one entry. ``origin_seq`` is one past the seq of the entry whose hash this entry's
        ``prev_hash`` names, if the caller found one: where the entry was sealed."""
        previous = self.previous
        problem = self._judge(entry, content, moved_from, origin_seq, previous)
        self.previous = ChainHead(entry.seq, entry.hash, entry.event_id)
        self.checked += 1
        return problem

    @staticmethod
    def _judge(
        entry: ChainEntry,
        content: Mapping[str, object] | None,
        moved_from: ChainEntry | None,
        origin_seq: int | None,
        previous: ChainHead,
    ) -> Problem | None:
        if entry.seq != previous.seq + 1:
            missing = previous.seq + 1
            last = f"record id {previous.event_id}" if previous.seq else "the start of the chain"
            return Problem(
                "deleted",
                None,
                missing,
                f"chain entries {missing}..{entry.seq - 1} are missing (after {last}, "
                f"before record id {entry.event_id})",
            )
        own_hash_ok = entry.hash == link_hash(entry.seq, entry.event_id, entry.digest, entry.prev_hash)
        if entry.prev_hash != previous.hash:
            sealed_elsewhere = (
                origin_seq is not None
                and origin_seq != entry.seq
                and entry.hash == link_hash(origin_seq, entry.event_id, entry.digest, entry.prev_hash)
            )
            if sealed_elsewhere:
                return Problem(
                    "reordered",
                    entry.event_id,
                    entry.seq,
                    f"the entry is intact but was sealed at seq {origin_seq}",
                )
            if own_hash_ok:
                return Problem(
                    "reordered",
                    entry.event_id,
                    entry.seq,
                    "the entry is intact but does not follow the entry before it",
                )
            return Problem("edited", entry.event_id, entry.seq, "the chain entry itself was altered")
        if not own_hash_ok:
            return Problem("edited", entry.event_id, entry.seq, "the chain entry itself was altered")
        if content is None:
            return Problem("deleted", entry.event_id, entry.seq, "the sealed record is gone")
        if content_digest(content) != entry.digest:
            if moved_from is not None and moved_from.seq != entry.seq:
                return Problem(
                    "reordered",
                    entry.event_id,
                    entry.seq,
                    f"the record holds the content sealed for record id {moved_from.event_id} "
                    f"(seq {moved_from.seq})",
                )
            return Problem("edited", entry.event_id, entry.seq, "the record's content changed after sealing")
        return None


@dataclass(frozen=True)
class VerifyReport:
    """What ``caremsg audit verify`` found: the first problem (if any), the head, the unsealed tail."""

    checked: int
    head: ChainHead
    unsealed: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def first_problem(
    chain_problem: Problem | None, inserted_id: int | None, inserted_seq_after: int | None
) -> Problem | None:
    """The earlier of the chain walk's first problem and the first inserted (unchained) record.

    An inserted record sits, by id, after chain entry ``inserted_seq_after``; it comes first if that
    is before the chain problem's position.
    """
    inserted = None
    if inserted_id is not None:
        inserted = Problem(
            "inserted",
            inserted_id,
            None,
            "the record is below the sealed head but was never sealed: it was added afterwards",
        )
    if chain_problem is None or inserted is None:
        return chain_problem or inserted
    position = chain_problem.seq if chain_problem.seq is not None else 0
    if inserted_seq_after is not None and inserted_seq_after < position:
        return inserted
    return chain_problem


def out_of_sequence(event_id: int, last_assigned: int) -> Problem:
    """A record whose id the database never handed out (above its sequence's last value): it was
    inserted with an id of its own choosing. The sealer leaves it unsealed, so it is reported on
    its own and every genuine record around it still verifies."""
    return Problem(
        "inserted",
        event_id,
        None,
        f"its id is above the last one the database assigned ({last_assigned}): it was inserted "
        "with an id of its own choosing, and is left unsealed",
    )


# --- checkpoints -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A statement "the chain had this head at this time", to be signed and kept outside the database."""

    seq: int
    event_id: int
    hash: str
    signed_at: datetime
    key_id: str

    def payload(self) -> dict[str, object]:
        return {
            "chain": "caremsg-audit",
            "version": CONTENT_VERSION,
            "seq": self.seq,
            "eventId": self.event_id,
            "hash": self.hash,
            "signedAt": self.signed_at.astimezone(UTC).isoformat(),
            "keyId": self.key_id,
        }

    def signing_bytes(self) -> bytes:
        """Exactly what the signature covers: the canonical JSON of :meth:`payload`."""
        return canonical_json(self.payload())


# --- searchable identifiers ------------------------------------------------------------------------


class IdentifierHasher:
    """Keyed hashes (HMAC-SHA-256) of identifiers that must be searchable in the audit trail but must
    not be stored in clear, such as the email of a failed login.

    The same identifier always gives the same hash under one key, so an auditor who knows an email
    can find its events; without the key the hashes cannot be reversed by guessing emails.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the identifier hashing key must be at least 32 bytes")
        self._key = key

    def email(self, email: str) -> str:
        """The hash of an email address, whatever its letter case or surrounding spaces."""
        return self._hash("email", email.strip().lower())

    def _hash(self, kind: str, value: str) -> str:
        return hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
