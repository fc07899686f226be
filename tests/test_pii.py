"""PII redaction: typed placeholders and counts, no false hits on years/times/dates/verses, idempotent."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.text import pii
from pipeline.text.pii import pii_candidates, redact_pii


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        ("Write to walter.pike@example.com today.", "Write to <EMAIL> today.", {"EMAIL": 1}),
        ("Mail m.lind+books@mail.example.co.uk, or marta@example.org.", "Mail <EMAIL>, or <EMAIL>.", {"EMAIL": 2}),
        ("Call +44 20 7946 0958 after six.", "Call <PHONE> after six.", {"PHONE": 1}),
        ("HANNA: My number is +1-202-555-0147.", "HANNA: My number is <PHONE>.", {"PHONE": 1}),
        ("Ring (555) 014-2231 or 555-014-2231.", "Ring <PHONE> or <PHONE>.", {"PHONE": 2}),
        ("Her mobile: +86 138 0013 8000.", "Her mobile: <PHONE>.", {"PHONE": 1}),
        ("Appelez le 06 12 34 56 78 ce soir.", "Appelez le <PHONE> ce soir.", {"PHONE": 1}),
        ("The office is on 020 7946 0958.", "The office is on <PHONE>.", {"PHONE": 1}),
        ("The robot pinged 203.0.113.42 twice.", "The robot pinged <IP> twice.", {"IP": 1}),
        ("Gateway 2001:db8::1 and fe80::1ff:fe23:4567:890a.", "Gateway <IP> and <IP>.", {"IP": 2}),
        ("Card 4111 1111 1111 1111 expires soon.", "Card <CREDIT_CARD> expires soon.", {"CREDIT_CARD": 1}),
        ("Paid with 5555-5555-5555-4444 and 378282246310005.", "Paid with <CREDIT_CARD> and <CREDIT_CARD>.",
         {"CREDIT_CARD": 2}),
        ("IBAN GB82 WEST 1234 5698 7654 32, thanks.", "IBAN <IBAN>, thanks.", {"IBAN": 1}),
    ],
)
def test_pii_is_redacted_with_typed_placeholders(text: str, expected: str, counts: dict):
    assert redact_pii(text) == (expected, counts)


@pytest.mark.parametrize(
    "text",
    [
        "In 1999 the mill burned, and in 1963 it was rebuilt.",
        "The train left at 10:30 and arrived at 14:05:30.",
        "The festival starts on 2024-03-01 and ends on 03/05/2024 or 01.02.2024.",
        "She ate 3 apples on page 12 of chapter 7 and counted 1,000,000 stars.",
        "John 3:16 and Psalm 23:1-6 were read aloud; see also Genesis 1:1.",
        "The years 1984-1989 were long; the phone book had 2024 pages.",
        "Version 3.2.1 of the map, not an address: 999.1.1.1 or 1.2.3.",
        "A card-like number that fails Luhn: 4111 1111 1111 1112.",
        "An ISBN: 978-3-16-148410-0, and a C++ scope std::vector or a::b.",
        "Coordinates 51.5074, -0.1278; temperature -12 to +4 degrees.",
        "Room 101, flat 4B, 221B Baker Street, population 8 982 000.",
    ],
)
def test_ordinary_numbers_are_left_alone(text: str):
    assert redact_pii(text) == (text, {})


def test_counts_only_the_types_found():
    text, counts = redact_pii("Email a@example.com or b@example.com, call +1-202-555-0147.")
    assert counts == {"EMAIL": 2, "PHONE": 1}
    assert text == "Email <EMAIL> or <EMAIL>, call <PHONE>."


PII_BITS = st.sampled_from(
    ["walter.pike@example.com", "+44 20 7946 0958", "(555) 014-2231", "555-014-2231", "203.0.113.42",
     "4111 1111 1111 1111", "06 12 34 56 78", "2001:db8::1", "GB82 WEST 1234 5698 7654 32", "<PHONE>", "<EMAIL>"]
)
NUMBERY = st.text(alphabet="0123456789 .-+()@:abcxyz\n<>", max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(PII_BITS, NUMBERY, st.text(max_size=10)), max_size=12).map("".join))
def test_redaction_is_idempotent(text: str):
    once, _ = redact_pii(text)
    assert redact_pii(once) == (once, {})


FILLER = "The miller's daughter walked to the market with a basket of eggs and came home at dusk. " * 30


def test_long_texts_are_searched_near_their_numbers():
    pii = "Call +44 20 7946 0958, mail a@example.com, pay 4111 1111 1111 1111 at 10:30 in 1999 from 203.0.113.42."
    text, counts = redact_pii(FILLER + pii + FILLER)
    assert len(FILLER) > 2048
    assert text == FILLER + "Call <PHONE>, mail <EMAIL>, pay <CREDIT_CARD> at 10:30 in 1999 from <IP>." + FILLER
    assert counts == {"EMAIL": 1, "CREDIT_CARD": 1, "IP": 1, "PHONE": 1}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(PII_BITS, NUMBERY), max_size=6).map(lambda parts: f"\n{FILLER}\n".join(parts)))
def test_long_text_redaction_matches_short_text_redaction(text: str):
    once, _ = redact_pii(text)
    assert redact_pii(once) == (once, {})
    pieces = [redact_pii(part)[0] for part in text.split(f"\n{FILLER}\n")]
    assert once == f"\n{FILLER}\n".join(pieces)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(PII_BITS, NUMBERY, st.text(max_size=10)), max_size=12).map("".join))
def test_number_rules_find_the_same_near_numbers_as_on_the_whole_text(text: str):
    # The number patterns only run on windows around number-like spans: that must change nothing.
    whole, windows = {}, {}
    assert pii._apply_in(pii._NUMBER_RULES, text, [(0, len(text))], whole) == \
        pii._apply_in(pii._NUMBER_RULES, text, pii._number_regions(text), windows)
    assert whole == windows


def test_candidates_hold_every_text_that_redaction_changes():
    texts = ["Mail me at ann@example.org today.", "Nothing here, only 1999 and 10:30.", "",
             "Call +44 20 7946 0958 now", "node fe80::1ff:fe23:4567:890a is up", "Pi is 3.14159",
             "card 4111 1111 1111 1111", "a:b:c:d:e:f:g:h words", "Chapter 12, verse 3:16."]
    candidates = set(pii_candidates(texts))
    for i, text in enumerate(texts):
        if redact_pii(text)[0] != text:
            assert i in candidates, text
    assert 1 not in candidates and 2 not in candidates and 8 not in candidates


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789٣४ .-+()/:@abcXY\n", max_size=40), min_size=1, max_size=6))
def test_candidates_are_a_superset_on_any_batch(texts):
    candidates = set(pii_candidates(texts))
    assert all(i in candidates for i, t in enumerate(texts) if redact_pii(t)[0] != t)


def _candidates_by_definition(texts: list[str]) -> list[int]:
    """pii_candidates' rule in plain Python over the texts joined by "\x00": '@', '::', digit '.' digit, seven
    ':' in a text, or the first of seven decimal digits whose neighbours are at most 3 positions apart."""
    joined = "\x00".join(texts)
    doc = [d for d, t in enumerate(texts) for _ in range(len(t) + 1)]
    found = {doc[i] for i, ch in enumerate(joined) if ch == "@" or joined[i : i + 2] == "::"
             or ch.isdecimal() and joined[i + 1 : i + 2] == "." and joined[i + 2 : i + 3].isdecimal()}
    digits = [i for i, ch in enumerate(joined) if ch.isdecimal()]
    found |= {doc[digits[j]] for j in range(len(digits) - 6)
              if all(b - a <= 3 for a, b in zip(digits[j : j + 6], digits[j + 1 : j + 7]))}
    return sorted(found | {d for d, t in enumerate(texts) if t.count(":") >= 7})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789٣४ .-+()/:@abcXY\n\x00İ", max_size=30), min_size=1, max_size=6))
def test_candidates_follow_their_definition(texts):
    assert pii_candidates(texts) == _candidates_by_definition(texts)
