"""Webhook signatures are keyed with the master API token, which may differ from the client's token."""

from __future__ import annotations

import pytest

from handlers.settings import SettingsError, load_settings


def test_the_master_api_token_from_the_environment_keys_webhook_signatures() -> None:
    settings = load_settings(
        env={
            "CAREMSG_SENDBIRD_APP_ID": "app",
            "CAREMSG_SENDBIRD_API_TOKEN": "secondary-token",
            "CAREMSG_SENDBIRD_MASTER_API_TOKEN": "master-token",
        }
    )
    assert settings.sendbird.api_token == "secondary-token"
    assert settings.sendbird.webhook_token == "master-token"


def test_without_a_master_api_token_the_client_token_is_taken_to_be_the_master() -> None:
    settings = load_settings(env={"CAREMSG_SENDBIRD_APP_ID": "app", "CAREMSG_SENDBIRD_API_TOKEN": "token"})
    assert settings.sendbird.webhook_token == "token"


def test_production_refuses_the_twilio_emulator() -> None:
    production = {
        "service": {"environment": "production"},
        "auth": {"jwt_secret": "p" * 40},
        "database": {"url": "postgresql+asyncpg://caremsg@db.internal/caremsg"},
        "sendbird": {"app_id": "app", "api_token": "token"},
    }
    with pytest.raises(SettingsError, match=r"messaging\.twilio_\*: the Twilio emulator is refused"):
        load_settings(env={}, **production)  # type: ignore[arg-type]


def test_production_with_twilio_refuses_to_check_signatures_against_the_arrival_url() -> None:
    production = {
        "service": {"environment": "production"},
        "auth": {"jwt_secret": "p" * 40},
        "database": {"url": "postgresql+asyncpg://caremsg@db.internal/caremsg"},
        "sendbird": {"app_id": "app", "api_token": "token"},
        "messaging": {"twilio_account_sid": "AC1", "twilio_auth_token": "twilio-token"},
    }
    with pytest.raises(SettingsError, match=r"messaging\.twilio_webhook_url"):
        load_settings(env={}, **production)  # type: ignore[arg-type]
