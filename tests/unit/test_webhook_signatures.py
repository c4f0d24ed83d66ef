"""Sendbird's webhook signatures (``x-sendbird-signature``): HMAC-SHA256 of the raw body under the
API token, lowercase hex. Pure functions, so tested here without the emulator; the webhook endpoint
that checks them is tested over HTTP in tests/api/test_webhooks.py."""

from __future__ import annotations

import json

import pytest

from integrations.sendbird import sign_webhook, verify_webhook_signature
from tests.support.sendbird import API_TOKEN

WEBHOOK_BODY = (
    b'{"category":"group_channel:message_send","sender":{"profile_url":"https:\\/\\/img.example\\/a.png"}}'
)


def test_signature_is_the_lowercase_hex_hmac_sha256_of_the_raw_body() -> None:
    # The RFC-style HMAC-SHA256 test vector (key "key", the quick brown fox).
    body = b"The quick brown fox jumps over the lazy dog"

    assert sign_webhook(body, "key") == "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"


def test_signature_of_the_raw_body_verifies() -> None:
    assert verify_webhook_signature(WEBHOOK_BODY, sign_webhook(WEBHOOK_BODY, API_TOKEN), API_TOKEN)


def test_tampered_body_fails_verification() -> None:
    signature = sign_webhook(WEBHOOK_BODY, API_TOKEN)

    assert not verify_webhook_signature(WEBHOOK_BODY.replace(b"a.png", b"b.png"), signature, API_TOKEN)


def test_signature_made_with_another_token_fails_verification() -> None:
    assert not verify_webhook_signature(
        WEBHOOK_BODY, sign_webhook(WEBHOOK_BODY, "secondary-token"), API_TOKEN
    )


@pytest.mark.parametrize(
    "signature", [None, "", "not-hex", "é" * 64], ids=["missing", "empty", "garbage", "non-ascii"]
)
def test_missing_or_malformed_signature_fails_verification(signature: str | None) -> None:
    assert not verify_webhook_signature(WEBHOOK_BODY, signature, API_TOKEN)


def test_signature_hex_case_does_not_matter() -> None:
    assert verify_webhook_signature(WEBHOOK_BODY, sign_webhook(WEBHOOK_BODY, API_TOKEN).upper(), API_TOKEN)


def test_escaped_slashes_verify_on_raw_bytes_but_re_serialised_json_fails() -> None:
    signature = sign_webhook(WEBHOOK_BODY, API_TOKEN)
    reserialised = json.dumps(json.loads(WEBHOOK_BODY), separators=(",", ":")).encode()

    assert b"\\/" in WEBHOOK_BODY
    assert b"\\/" not in reserialised
    assert verify_webhook_signature(WEBHOOK_BODY, signature, API_TOKEN)
    assert not verify_webhook_signature(reserialised, signature, API_TOKEN)


def test_an_empty_api_token_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="api_token"):
        verify_webhook_signature(WEBHOOK_BODY, "00" * 32, "")
