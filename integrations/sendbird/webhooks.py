"""Sendbird webhook signatures (§7): lowercase hex HMAC-SHA256 of the raw body, keyed with the
master API token."""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

SIGNATURE_HEADER: Final = "x-sendbird-signature"


def sign_webhook(body: bytes, api_token: str) -> str:
    """The ``x-sendbird-signature`` of ``body``: lowercase hex HMAC-SHA256 keyed with the master API token."""
    if not api_token:
        raise ValueError("api_token is required to sign a webhook")
    return hmac.new(api_token.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_webhook_signature(body: bytes, signature: str | None, api_token: str) -> bool:
    """True only if ``signature`` matches the raw ``body`` bytes exactly as received.

    Verify before parsing: Sendbird escapes ``/`` as ``\\/``, so re-serialised JSON never matches.
    The comparison takes constant time. An empty ``api_token`` is a configuration error and raises.
    """
    expected = sign_webhook(body, api_token)
    if not signature or not signature.isascii():
        return False
    return hmac.compare_digest(expected, signature.lower())
