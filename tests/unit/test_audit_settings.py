"""The audit keys are settings: development defaults work out of the box and are refused in production."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from handlers.settings import SettingsError, load_settings

PRODUCTION: dict[str, Any] = {
    "service": {"environment": "production"},
    "auth": {"jwt_secret": "p" * 40},
    "database": {"url": "postgresql+asyncpg://caremsg@db.internal/caremsg"},
    "sendbird": {"app_id": "app", "api_token": "token"},
    "messaging": {
        "twilio_account_sid": "AC1",
        "twilio_auth_token": "twilio-token",
        "twilio_webhook_url": "https://caremsg.example.org/api/webhooks/twilio",
    },
}
GOOD_SEED = base64.b64encode(b"s" * 32).decode()


def test_production_refuses_the_development_identifier_key() -> None:
    with pytest.raises(SettingsError, match=r"audit\.identifier_key: the development default is refused"):
        load_settings(env={}, **PRODUCTION, audit={"signing_key": GOOD_SEED})


def test_production_refuses_the_development_signing_key() -> None:
    with pytest.raises(SettingsError, match=r"audit\.signing_key: the development default is refused"):
        load_settings(env={}, **PRODUCTION, audit={"identifier_key": "i" * 40})


def test_production_starts_with_keys_of_its_own_from_the_environment() -> None:
    env = {"CAREMSG_AUDIT_IDENTIFIER_KEY": "i" * 40, "CAREMSG_AUDIT_SIGNING_KEY": GOOD_SEED}
    settings = load_settings(env=env, **PRODUCTION)
    assert settings.audit.signing_key == GOOD_SEED


@pytest.mark.parametrize("seed", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_signing_key_that_is_not_a_32_byte_seed_is_refused_naming_it(seed: str) -> None:
    with pytest.raises(SettingsError, match=r"audit\.signing_key"):
        load_settings(env={}, audit={"signing_key": seed})


def test_an_identifier_key_shorter_than_32_bytes_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"audit\.identifier_key: must be at least 32 bytes"):
        load_settings(env={}, audit={"identifier_key": "short"})
