"""Which chat posts carry the 42 CFR 2.32 notice (engine/part2.py): the first message to an
organization's members in a conversation, per organization, only under a Part 2 consent."""

from __future__ import annotations

from engine.part2 import Covering, NoticeDue, Post, notices_due

PART2 = Covering(organization_id=7, consent_id=70, part2=True)
PLAIN = Covering(organization_id=8, consent_id=80, part2=False)


def test_the_first_message_under_a_part2_consent_carries_the_notice_and_later_ones_do_not() -> None:
    posts = [Post(11, 1, [PART2]), Post(10, 1, [PART2]), Post(12, 1, [PART2])]

    assert notices_due(posts) == [NoticeDue(10, 1, 7, 70)]


def test_a_consent_that_is_not_part2_carries_no_notice() -> None:
    assert notices_due([Post(10, 1, [PLAIN])]) == []


def test_each_organization_is_noticed_once_in_each_conversation() -> None:
    other = Covering(organization_id=9, consent_id=90, part2=True)
    posts = [Post(10, 1, [PART2]), Post(11, 1, [PART2, other]), Post(12, 2, [PART2])]

    assert notices_due(posts) == [NoticeDue(10, 1, 7, 70), NoticeDue(11, 1, 9, 90), NoticeDue(12, 2, 7, 70)]


def test_a_notice_already_given_is_not_repeated() -> None:
    assert notices_due([Post(20, 1, [PART2, PLAIN])], given=[(1, 7)]) == []


def test_an_organization_under_two_part2_consents_is_noticed_once_naming_the_lowest() -> None:
    second = Covering(organization_id=7, consent_id=60, part2=True)

    assert notices_due([Post(10, 1, [PART2, second])]) == [NoticeDue(10, 1, 7, 60)]
