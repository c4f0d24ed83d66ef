"""The in-memory index of active consents that staff decisions read, instead of a query per decision.

PostgreSQL stays the source of truth; every service instance keeps one ``ConsentIndex`` current from
the numbered change log (see integrations/consent_sync.py). Only consents that disclose a patient to
an *organization* or a *compliance group* are indexed: those decide the ``covered`` fact for staff.
External-party consents are looked up in PostgreSQL when an SMS participant is added.

Memory: one consent is one packed ``int`` (about 40 bytes), held per patient either alone or in a
tuple, so 1M consents fit in well under 150 MB. Layout, low bits first::

    bits  0-31  recipient: organization id, or compliance group id | 1 << 31
    bits 32-35  scope bits (read=1, message=2, sms=4, write=8)
    bits 36-38  purpose code
    bits 39-69  consent id
    bits 70-113 expires at, milliseconds since the epoch (0 = never)
    bits 114-   effective at, seconds since the epoch (0 = already effective when indexed)

Fields that are usually zero sit in the high bits, so a typical entry stays a three-digit int.
Which consents are 42 CFR Part 2 consents is kept beside the packed entries, as a set of their ids
(a handful among many), so the packed form and its size do not change.
Time is evaluated at decision time (``at``): an expired consent stops covering the moment it ends,
with no timer. A revoked consent is removed from the index.

Readers never see a half-applied change: a single change is one dict assignment, and a full reload
builds a new map and swaps it in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from engine.facts import ConsentCandidate, ConsentChoice, ConsentNeed, choose_consent, millis
from engine.model import Consent, ConsentScope, Purpose, RecipientType

GROUP_FLAG = 1 << 31
_RECIPIENT_MASK = (1 << 32) - 1
_ID_MASK = (1 << 31) - 1
_EXPIRES_MASK = (1 << 44) - 1
EFFECTIVE_SHIFT = 114
SCOPE_BITS: dict[str, int] = {
    ConsentScope.READ: 1,
    ConsentScope.MESSAGE: 2,
    ConsentScope.SMS: 4,
    ConsentScope.WRITE: 8,
}
_PURPOSE_VALUES: tuple[str, ...] = tuple(p.value for p in Purpose)
_GROUP, _ORGANIZATION = RecipientType.COMPLIANCE_GROUP, RecipientType.ORGANIZATION
_SCOPE_NAMES: dict[int, frozenset[str]] = {
    bits: frozenset(name for name, bit in SCOPE_BITS.items() if bits & bit) for bits in range(16)
}
PURPOSES: tuple[Purpose, ...] = tuple(Purpose)
PURPOSE_CODES: dict[str, int] = {p.value: i for i, p in enumerate(PURPOSES)}
ALL_PURPOSES = (1 << len(PURPOSES)) - 1

Packed = int
Entries = int | tuple[int, ...]


def scope_mask(scopes: Iterable[str]) -> int:
    """The bits of these scope names (unknown names are ignored: they grant nothing)."""
    mask = 0
    for scope in scopes:
        mask |= SCOPE_BITS.get(scope, 0)
    return mask


def purpose_mask(purposes: Iterable[str]) -> int:
    """The bits of these purposes; no purposes at all means any purpose is acceptable."""
    mask = 0
    for purpose in purposes:
        mask |= 1 << PURPOSE_CODES[purpose]
    return mask or ALL_PURPOSES


def _millis(at: datetime | None) -> int:
    return 0 if at is None else int(at.timestamp() * 1000)


def _ceil_seconds(at: datetime) -> int:
    whole = int(at.timestamp())
    return whole if whole == at.timestamp() else whole + 1


@dataclass(frozen=True)
class IndexedConsent:
    """One consent as the index needs it: who it discloses to, for what, and when."""

    consent_id: int
    patient_id: int
    recipient_type: RecipientType
    recipient_id: int
    scope: frozenset[str]
    purpose: str
    effective_at: datetime
    expires_at: datetime | None
    #: A 42 CFR Part 2 consent (decisions resting on it say so in their details).
    part2: bool = False

    def pack(self, now: datetime) -> Packed:
        recipient = self.recipient_id | (
            GROUP_FLAG if self.recipient_type == RecipientType.COMPLIANCE_GROUP else 0
        )
        # Already effective: store 0 so the entry stays small (time only moves forward).
        effective = 0 if self.effective_at <= now else _ceil_seconds(self.effective_at)
        # Round expiry down to the millisecond: a consent ends no later than it says.
        expires = _millis(self.expires_at)
        return (
            recipient
            | scope_mask(self.scope) << 32
            | PURPOSE_CODES[self.purpose] << 36
            | self.consent_id << 39
            | expires << 70
            | effective << EFFECTIVE_SHIFT
        )

    def still_counts(self, now: datetime) -> bool:
        """Not expired yet (a future effective date still belongs in the index)."""
        return self.expires_at is None or self.expires_at > now

    @classmethod
    def of(cls, consent: Consent) -> IndexedConsent | None:
        """The index entry of a consent, or None if it is revoked or names an external party."""
        if consent.revoked_at is not None:
            return None
        if consent.recipient_type == RecipientType.ORGANIZATION and consent.organization_id is not None:
            recipient = consent.organization_id
        elif (
            consent.recipient_type == RecipientType.COMPLIANCE_GROUP
            and consent.compliance_group_id is not None
        ):
            recipient = consent.compliance_group_id
        else:
            return None
        return cls(
            consent.id,
            consent.patient_id,
            consent.recipient_type,
            recipient,
            frozenset(consent.scope),
            consent.purpose.value,
            consent.effective_at,
            consent.expires_at,
            consent.part2 is not None,
        )


@dataclass(frozen=True)
class Coverage:
    """The consent that covers a request, for the audit record."""

    consent_id: int
    purpose: str


def consent_id_of(entry: Packed) -> int:
    return (entry >> 39) & _ID_MASK


class ConsentIndex:
    """Active organization and compliance-group consents, by patient; pure and in memory.

    ``covering`` is the hot path: a dict lookup and a scan of one patient's few entries, whatever
    the total number of consents. Group membership is kept as organization → recipient codes.
    """

    def __init__(self) -> None:
        self._by_patient: dict[int, Entries] = {}
        self._codes_by_org: dict[int, frozenset[int]] = {}
        self._groups: dict[int, frozenset[int]] = {}
        self.seq = 0
        self.loaded = False
        # consent id -> (sequence number of the last change applied to it since the last snapshot,
        # its patient), so a late or repeated notification never undoes a newer change and a
        # snapshot older than a change applied meanwhile does not undo it either.
        self._applied: dict[int, tuple[int, int]] = {}
        #: Ids of the indexed consents that are 42 CFR Part 2 consents.
        self._part2: set[int] = set()

    # --- reading ---------------------------------------------------------------------------------

    def covering(
        self,
        patient_id: int,
        organization_id: int,
        at: datetime,
        *,
        scope: int = 0,
        purposes: int = ALL_PURPOSES,
        exclude: int | None = None,
    ) -> Coverage | None:
        """The consent that discloses the patient to the organization (directly or through a
        compliance group it belongs to) for every ``scope`` bit and one of ``purposes``, if any,
        chosen by :func:`engine.facts.choose_consent` (see :meth:`choose`)."""
        need = _need_of_masks(scope, purposes)
        chosen = self.choose(patient_id, organization_id, millis(at), need, exclude=exclude).consent
        return None if chosen is None else Coverage(chosen.consent_id, chosen.purpose)

    def choose(
        self,
        patient_id: int,
        organization_id: int,
        at_ms: int,
        need: ConsentNeed,
        *,
        exclude: int | None = None,
    ) -> ConsentChoice:
        """The consent that counts for ``need`` among those disclosing the patient to the
        organization, directly or through a compliance group; ``at_ms`` is the decision time
        (milliseconds since the epoch), so a consent stops counting at the moment it ends. The
        choice itself is :func:`engine.facts.choose_consent`'s."""
        return choose_consent(self.candidates(patient_id, organization_id), need, at_ms, exclude=exclude)

    def candidates(self, patient_id: int, organization_id: int) -> list[ConsentCandidate]:
        """The indexed consents of the patient naming the organization or one of its groups."""
        entries = self._by_patient.get(patient_id)
        if entries is None:
            return []
        codes = self._codes_by_org.get(organization_id)
        part2 = self._part2
        found: list[ConsentCandidate] = []
        # tuple.__new__ builds the named tuple without its Python-level __new__: this runs per
        # matching consent on every decision.
        make = tuple.__new__
        for entry in (entries,) if isinstance(entries, int) else entries:
            recipient = entry & _RECIPIENT_MASK
            if recipient != organization_id and (codes is None or recipient not in codes):
                continue
            expires = (entry >> 70) & _EXPIRES_MASK
            consent_id = (entry >> 39) & _ID_MASK
            found.append(
                make(
                    ConsentCandidate,
                    (
                        consent_id,
                        _GROUP if recipient & GROUP_FLAG else _ORGANIZATION,
                        _SCOPE_NAMES[(entry >> 32) & 15],
                        _PURPOSE_VALUES[(entry >> 36) & 7],
                        (entry >> EFFECTIVE_SHIFT) * 1000,
                        expires or None,
                        None,
                        consent_id in part2,
                    ),
                )
            )
        return found

    def __len__(self) -> int:
        return sum(1 if isinstance(e, int) else len(e) for e in self._by_patient.values())

    def patients(self) -> int:
        return len(self._by_patient)

    # --- changing --------------------------------------------------------------------------------

    def put(self, consent: IndexedConsent, now: datetime) -> None:
        """Add or replace one consent (by id)."""
        kept = _excluding(self._by_patient.get(consent.patient_id), consent.consent_id)
        _store(self._by_patient, consent.patient_id, (*kept, consent.pack(now)))
        if consent.part2:
            self._part2.add(consent.consent_id)
        else:
            self._part2.discard(consent.consent_id)

    def remove(self, consent_id: int, patient_id: int) -> None:
        """Drop one consent (revoked, or no longer disclosing to staff); absent is not an error."""
        _store(self._by_patient, patient_id, _excluding(self._by_patient.get(patient_id), consent_id))
        self._part2.discard(consent_id)

    def apply(
        self, seq: int, consent_id: int, patient_id: int, state: IndexedConsent | None, now: datetime
    ) -> bool:
        """Apply the state of one consent as of change ``seq`` (None: it no longer covers anyone).

        Idempotent and order-proof: a change older than one already applied (or than the last
        snapshot) is ignored. Returns whether it was applied.
        """
        if seq <= self.seq or seq <= self._applied.get(consent_id, (0, 0))[0]:
            return False
        self._applied[consent_id] = (seq, patient_id)
        if state is None or not state.still_counts(now):
            self.remove(consent_id, patient_id)
        else:
            self.put(state, now)
        return True

    def set_group(self, group_id: int, organization_ids: Iterable[int]) -> None:
        """Record (or replace) which organizations a compliance group holds."""
        self._groups[group_id] = frozenset(organization_ids)
        self._codes_by_org = _codes(self._groups)

    def knows_group(self, group_id: int) -> bool:
        return group_id in self._groups

    def replace_all(
        self,
        consents: Iterable[IndexedConsent],
        groups: Mapping[int, Iterable[int]],
        now: datetime,
        seq: int,
    ) -> None:
        """Rebuild from a full snapshot (consents active or future at ``now``) and swap it in."""
        consents = list(consents)
        # A whole packed entry is a valid ``low`` (its other fields are OR-ed in again as zeros).
        by_patient = pack_rows((c.patient_id, c.consent_id, c.pack(now), 0, 0) for c in consents)
        part2 = {c.consent_id for c in consents if c.part2}
        self.load_packed(by_patient, groups, seq, part2)

    def load_packed(
        self,
        by_patient: dict[int, Entries],
        groups: Mapping[int, Iterable[int]],
        seq: int,
        part2_ids: Iterable[int] = (),
    ) -> None:
        """Swap in a map built elsewhere by :func:`pack_rows` (the fast bulk-load path), with the
        ids of its Part 2 consents."""
        part2 = set(part2_ids)
        applied = self._keep_newer(by_patient, part2, seq)
        # Groups never change members nor go away: keep those learned since the snapshot was read.
        group_sets = {**self._groups, **{g: frozenset(orgs) for g, orgs in groups.items()}}
        # One assignment each; readers use whichever map they fetched, both complete.
        self._groups, self._codes_by_org, self._by_patient = group_sets, _codes(group_sets), by_patient
        self._part2 = part2
        self.seq = seq
        self._applied = applied
        self.loaded = True

    def _keep_newer(
        self, by_patient: dict[int, Entries], part2: set[int], seq: int
    ) -> dict[int, tuple[int, int]]:
        """Carry into a snapshot as of change ``seq`` the consents changed here after it was taken.

        A reload (after a reconnection) reads its snapshot while requests go on; a revocation this
        instance recorded and applied meanwhile has a higher number than the snapshot, which still
        holds the consent: swapped in as it is, the revoked consent would cover requests again until
        the revocation's notification came round. Returns those changes (late notifications are
        compared with them)."""
        newer = {cid: change for cid, change in self._applied.items() if change[0] > seq}
        for consent_id, (_, patient_id) in newer.items():
            held_here = _as_tuple(self._by_patient.get(patient_id))
            current = tuple(e for e in held_here if consent_id_of(e) == consent_id)
            _store(by_patient, patient_id, _excluding(by_patient.get(patient_id), consent_id) + current)
            if consent_id in self._part2:
                part2.add(consent_id)
            else:
                part2.discard(consent_id)
        return newer


def _store(by_patient: dict[int, Entries], patient_id: int, entries: tuple[int, ...]) -> None:
    """Keep a patient's entries in their compact form (none, one int, or a tuple)."""
    if not entries:
        by_patient.pop(patient_id, None)
    else:
        by_patient[patient_id] = entries[0] if len(entries) == 1 else entries


def _as_tuple(entries: Entries | None) -> tuple[int, ...]:
    if entries is None:
        return ()
    return (entries,) if isinstance(entries, int) else entries


def _excluding(entries: Entries | None, consent_id: int) -> tuple[int, ...]:
    return tuple(e for e in _as_tuple(entries) if consent_id_of(e) != consent_id)


@lru_cache(maxsize=256)
def _need_of_masks(scope: int, purposes: int) -> ConsentNeed:
    """The :class:`~engine.facts.ConsentNeed` of scope and purpose bit masks."""
    names = frozenset(p.value for i, p in enumerate(PURPOSES) if purposes & (1 << i))
    return ConsentNeed(_SCOPE_NAMES[scope & 15], frozenset() if purposes == ALL_PURPOSES else names)


def _codes(groups: Mapping[int, frozenset[int]]) -> dict[int, frozenset[int]]:
    by_org: dict[int, set[int]] = {}
    for group_id, orgs in groups.items():
        for org in orgs:
            by_org.setdefault(org, set()).add(group_id | GROUP_FLAG)
    return {org: frozenset(codes) for org, codes in by_org.items()}


def pack_rows(rows: Iterable[tuple[int, int, int, int, int]]) -> dict[int, Entries]:
    """Build the per-patient map from ``(patient_id, consent_id, low, expires_ms, effective_s)`` rows,
    where ``low`` holds recipient, scope and purpose bits already (as the snapshot query returns)."""
    by_patient: dict[int, Entries] = {}
    get = by_patient.get
    for patient_id, consent_id, low, expires_ms, effective_s in rows:
        packed = low | consent_id << 39 | expires_ms << 70 | effective_s << EFFECTIVE_SHIFT
        current = get(patient_id)
        if current is None:
            by_patient[patient_id] = packed
        elif isinstance(current, int):
            by_patient[patient_id] = (current, packed)
        else:
            by_patient[patient_id] = (*current, packed)
    return by_patient
