"""The Sendbird client's and gateway's tests' shared pieces (tests/integration/sendbird/): the
emulator's credentials and names, a clock that moves only when slept on, canned Sendbird errors and
a team to post into. Their fixtures are in tests/integration/sendbird/conftest.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from integrations.sendbird import SendbirdClient

API_TOKEN = "test-master-api-token"
APP_ID = "test-app"
CHANNEL = "care_team_ward_7"
PHONE = "+15555550123"
SECRET_TEXT = "Patient in bed 4 needs a potassium check"
MOCK_BASE_URL = "https://api-test-app.sendbird.com"

Handler = Callable[[httpx.Request], httpx.Response]


class ManualClock:
    """Monotonic time that moves only when someone sleeps on it; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def sendbird_error(code: int, *, status: int = 400, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": True, "code": code, "message": "x"}, headers=headers)


def client_events(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The client's log events, without the emulator's."""
    return [entry["event"] for entry in logs if entry["event"].startswith("sendbird.")]


async def seed_team(client: SendbirdClient, *user_ids: str) -> None:
    """Users alice, bob (and any others given) and a channel with alice and bob in it."""
    for user_id in ("alice", "bob", *user_ids):
        await client.create_user(user_id, nickname=user_id.title())
    await client.create_group_channel(CHANNEL, name="Ward 7", user_ids=["alice", "bob"])
