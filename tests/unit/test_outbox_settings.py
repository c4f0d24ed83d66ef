"""The relay's concurrency is a setting: config.toml gives the default, the environment overrides it."""

from __future__ import annotations

import pytest

from handlers.settings import PROJECT_ROOT, OutboxSettings, SettingsError, load_settings


def test_the_shipped_config_delivers_eight_conversations_side_by_side_like_the_model_default() -> None:
    settings = load_settings(PROJECT_ROOT / "config.toml", env={})
    assert settings.outbox.concurrency == OutboxSettings().concurrency == 8


def test_the_environment_overrides_the_relay_concurrency() -> None:
    settings = load_settings(env={"CAREMSG_OUTBOX_CONCURRENCY": "3"})
    assert settings.outbox.concurrency == 3


@pytest.mark.parametrize("concurrency", [0, -1, 101])
def test_a_relay_concurrency_outside_1_to_100_is_refused_naming_it(concurrency: int) -> None:
    with pytest.raises(SettingsError, match=r"outbox\.concurrency"):
        load_settings(env={}, outbox={"concurrency": concurrency})
