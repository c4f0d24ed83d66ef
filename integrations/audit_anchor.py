"""Signed checkpoints of the audit chain head (Ed25519, with ``cryptography``).

An anchor is a small JSON document: the chain head (seq, event id, hash), when it was signed, the
signing key's id, the public key and the signature over the canonical JSON of the rest. Keep it
outside the database (a ticket, an e-mail to compliance, a WORM bucket): whoever rewrites the trail
and recomputes every hash still cannot produce the hash the anchor names at that seq, nor sign a
new anchor without the private key. ``verify_anchor`` needs only the document and the public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from engine.audit_chain import ChainHead, Checkpoint


class AnchorError(Exception):
    """The anchor document is malformed, or its signature does not verify under the given key."""


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AnchorError(f"{what} is not valid base64") from None


def private_key(seed_b64: str) -> Ed25519PrivateKey:
    """The signing key from the base64 of its 32-byte seed (``audit.signing_key``)."""
    seed = _b64decode(seed_b64, "audit.signing_key")
    if len(seed) != 32:
        raise AnchorError("audit.signing_key must be the base64 of a 32-byte Ed25519 seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_text(key: Ed25519PublicKey) -> str:
    """The public key as base64 of its 32 raw bytes: what ``verify-anchor --public-key`` takes."""
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def public_key(text: str) -> Ed25519PublicKey:
    raw = _b64decode(text.strip(), "the public key")
    if len(raw) != 32:
        raise AnchorError("the public key must be the base64 of 32 raw Ed25519 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def sign_anchor(head: ChainHead, key: Ed25519PrivateKey, signed_at: datetime) -> dict[str, Any]:
    """The anchor document for this head."""
    pub = key.public_key()
    checkpoint = Checkpoint(head.seq, head.event_id, head.hash, signed_at, key_id(pub))
    signature = key.sign(checkpoint.signing_bytes())
    return {
        **checkpoint.payload(),
        "publicKey": public_key_text(pub),
        "signature": base64.b64encode(signature).decode(),
    }


def verify_anchor(document: Mapping[str, Any], key: Ed25519PublicKey) -> Checkpoint:
    """The checkpoint the document states, if its signature verifies under ``key``; else AnchorError.

    The public key inside the document is ignored on purpose: trust comes from the key the verifier
    already holds, not from the document it is checking.
    """
    try:
        checkpoint = Checkpoint(
            seq=int(document["seq"]),
            event_id=int(document["eventId"]),
            hash=str(document["hash"]),
            signed_at=datetime.fromisoformat(str(document["signedAt"])),
            key_id=str(document["keyId"]),
        )
        signature = _b64decode(str(document["signature"]), "the signature")
    except (KeyError, TypeError, ValueError) as exc:
        raise AnchorError(f"not an audit anchor: {exc.__class__.__name__} {exc}") from None
    if document.get("chain") != "caremsg-audit":
        raise AnchorError("not an audit anchor: chain is not caremsg-audit")
    if checkpoint.key_id != key_id(key):
        raise AnchorError(f"signed by key {checkpoint.key_id}, not by the given key {key_id(key)}")
    try:
        key.verify(signature, checkpoint.signing_bytes())
    except InvalidSignature:
        raise AnchorError("the signature does not verify: the anchor was altered") from None
    return checkpoint
