"""Reading the reply code a text starts with, and what texts say about codes (issue 9, item 10)."""

from __future__ import annotations

import pytest

from engine.sms import reply_code, which_conversation, with_reply_code


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#2 see you then", (2, "see you then")),
        ("#2: see you then", (2, "see you then")),
        ("  # 12, ok", (12, "ok")),
        ("#3", (3, "")),
        ("see you #2", (None, "see you #2")),
        ("#2nd floor please", (None, "#2nd floor please")),
        ("#abc hi", (None, "#abc hi")),
    ],
    ids=["space", "colon", "spaced-hash", "code-only", "not-leading", "digits-then-letters", "not-digits"],
)
def test_a_leading_code_is_read_and_taken_off_the_text(text: str, expected: tuple[int | None, str]) -> None:
    assert reply_code(text) == expected


def test_the_question_back_lists_codes_only_in_order() -> None:
    assert which_conversation([3, 1]) == (
        "Your reply was not delivered: this number is in more than one conversation. "
        "Please send it again starting with one of #1, #3."
    )


def test_a_text_to_a_number_in_several_conversations_ends_with_its_code() -> None:
    assert with_reply_code("You have a new message.", 4) == (
        "You have a new message. To reply, start your message with #4."
    )
