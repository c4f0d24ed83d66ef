"""Which inbound texts are carrier keywords (engine/sms.py, ``keyword``): a keyword however a phone or a
keyboard dresses it (case, full-width letters, invisible characters, punctuation and emoji around it,
a reply code before or after it), and nothing else: a keyword inside a sentence, or a question, stays
a message for the care team."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.sms import Keyword, SmsRules, inbound_keyword, keyword

RULES = SmsRules()
EXPECTED = {
    **dict.fromkeys(RULES.stop_words, Keyword.STOP),
    **dict.fromkeys(RULES.start_words, Keyword.START),
    **dict.fromkeys(RULES.help_words, Keyword.HELP),
}
WORDS = sorted(EXPECTED)

#: What phones and keyboards put inside a text without showing it.
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u200e", "\u200f", "\ufe0f"]
#: What people put around a word.
AROUND = [" ", "\t", "\n", "\u00a0", "\u3000", ".", ",", "!", "...", "'", '"', "(", ")", "-", "*", "~"]
EMOJI = ["\U0001f64f", "\U0001f6d1", "\u2764\ufe0f", "\U0001f44d\U0001f3fd", "\U0001f621", "\u270b"]
#: Ordinary words a sentence around a keyword may have.
ORDINARY = ["please", "don't", "the", "meds", "my", "now", "I", "will", "at", "10", "not", "yet", "you"]


def fullwidth(text: str) -> str:
    """ASCII as a phone's full-width keyboard writes it."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", Keyword.STOP),
        ("\uff33\uff34\uff2f\uff30", Keyword.STOP),  # full-width
        ("STOP\u200b", Keyword.STOP),
        ("Stop,", Keyword.STOP),
        ("Stop \U0001f64f", Keyword.STOP),
        ("STOP #2", Keyword.STOP),
        ("#2 stop", Keyword.STOP),
        ("\U0001f6d1 Stop!!", Keyword.STOP),
        ("s t o p", Keyword.STOP),
        ("Start.", Keyword.START),
        ("help \u2764\ufe0f", Keyword.HELP),
        ("please don't stop the meds", None),
        ("stop it", None),
        ("Stop?", None),  # a question, for the care team to answer
        ("STOP2", None),
        ("#2", None),
        ("qu\u0131t", None),  # a dotless i is no I
        ("", None),
    ],
)
def test_known_texts(text: str, expected: Keyword | None) -> None:
    assert keyword(text, RULES) is expected


@given(word=st.sampled_from(WORDS), data=st.data())
def test_a_keyword_is_recognised_however_a_phone_dresses_it(word: str, data: st.DataObject) -> None:
    upper = data.draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)), "case")
    dressed = "".join(c.upper() if u else c.lower() for c, u in zip(word, upper, strict=True))
    if data.draw(st.booleans(), "full-width"):
        dressed = fullwidth(dressed)
    for _ in range(data.draw(st.integers(0, 3), "invisible characters")):
        at = data.draw(st.integers(0, len(dressed)), "at")
        dressed = dressed[:at] + data.draw(st.sampled_from(INVISIBLE)) + dressed[at:]
    decoration = st.lists(st.sampled_from(AROUND + EMOJI + INVISIBLE), max_size=4).map("".join)
    code = st.sampled_from(["", "#2", "#12 ", "# 3", "#999999"])
    code_before, code_after = data.draw(code, "code before"), data.draw(code, "code after")
    text = "".join(
        [
            data.draw(decoration, "before"),
            code_before + (" " if code_before and data.draw(st.booleans()) else ""),
            dressed,
            (" " if code_after and data.draw(st.booleans()) else "") + code_after,
            data.draw(decoration, "after"),
        ]
    )

    assert keyword(text, RULES) is EXPECTED[word]


@given(
    word=st.sampled_from(WORDS),
    before=st.lists(st.sampled_from(ORDINARY), max_size=3),
    after=st.lists(st.sampled_from(ORDINARY), max_size=3),
)
def test_a_keyword_inside_a_sentence_is_a_message(word: str, before: list[str], after: list[str]) -> None:
    if not before and not after:
        return
    text = " ".join([*before, word.lower(), *after])
    letters_only = "".join(text.split()).upper()
    if letters_only.isalpha() and letters_only in EXPECTED:  # e.g. "stop" + "all": STOPALL itself
        return

    assert keyword(text, RULES) is None
    assert keyword(text + "?", RULES) is None


@given(st.text(max_size=40))
def test_a_keyword_is_nothing_but_its_word_and_reading_it_is_stable(text: str) -> None:
    """Whatever the text: a keyword has no letters but the keyword's (conservative), and neither
    NFKC nor an invisible character anywhere changes the reading."""
    found = keyword(text, RULES)
    letters = "".join(ch for ch in unicodedata.normalize("NFKC", text) if ch.isalpha()).upper()

    if found is not None:
        assert EXPECTED.get(letters) is found
    assert keyword(unicodedata.normalize("NFKC", text), RULES) is found
    assert keyword("\u200b".join(text), RULES) is found


@given(text=st.text(max_size=20), provider=st.sampled_from([*Keyword, None]))
def test_the_providers_reading_wins_whatever_the_text(text: str, provider: Keyword | None) -> None:
    expected = provider if provider is not None else keyword(text, RULES)

    assert inbound_keyword(text, provider, RULES) is expected
