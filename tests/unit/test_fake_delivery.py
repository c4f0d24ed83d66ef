"""The fake relay trigger's check that a wake names what was queued: it must be able to fail, or the
workflow tests that rely on it (every send on fakes) would check nothing."""

from __future__ import annotations

import pytest

from engine.effects import CreateChannel, PostMessage, TextMessage
from tests.support.fakes import FakeDatabase, FakeDelivery


def test_a_wake_naming_every_type_queued_since_the_last_one_passes() -> None:
    db = FakeDatabase()
    delivery = FakeDelivery(db)
    db.outbox += [PostMessage(1, 2), TextMessage(1, 2, 3)]

    delivery.wake({PostMessage, TextMessage})
    db.outbox.append(PostMessage(1, 4))
    delivery.wake({PostMessage})  # the text queued before the previous wake is not counted again

    assert delivery.wakes == 2
    assert delivery.named == [frozenset({PostMessage, TextMessage}), frozenset({PostMessage})]


def test_a_wake_naming_too_little_fails() -> None:
    db = FakeDatabase()
    delivery = FakeDelivery(db)
    db.outbox += [PostMessage(1, 2), TextMessage(1, 2, 3)]

    with pytest.raises(AssertionError, match="TextMessage"):
        delivery.wake({PostMessage})


def test_a_wake_that_names_nothing_in_particular_wakes_for_anything() -> None:
    db = FakeDatabase()
    delivery = FakeDelivery(db)
    db.outbox.append(CreateChannel(1))

    delivery.wake()

    assert delivery.named == [None]
