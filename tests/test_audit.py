"""Representation audit counts (hand-computed) and the gender-swap heuristics."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sieve import add_counts
from pipeline.text import audit as audit_module
from pipeline.text.audit import Audit, gender_swap, observe, report_lines, sorted_counts
from pipeline.text.wordarrays import WordArrays
from tests.conftest import sample_texts

TEXT = ("The old man was a baker. His daughter, a young woman, became a doctor.\n\n"
        "She met two teachers and a nurse. The old mill stood by the river. The children laughed.")


def test_counts_by_hand():
    audit = Audit()
    audit.add(TEXT)
    c = audit.counts
    assert c["docs"] == 1
    assert c["mentions"] == {
        "male": {"man": 1, "his": 1},
        "female": {"daughter": 1, "woman": 1, "she": 1},
        "old": {"old man": 1},  # "old mill" is not a person
        "young": {"young woman": 1, "children": 1},
    }
    assert c["docs_with"] == {"male": 1, "female": 1, "old": 1, "young": 1}
    assert c["occupations"] == {"baker": 1, "doctor": 1, "teacher": 1, "nurse": 1}
    # sentence 1: old man + baker; 2: his, daughter, young woman + doctor; 3: she + teachers, nurse
    assert c["cooccurrence"] == {
        "male": {"baker": 1, "doctor": 1},
        "old": {"baker": 1},
        "female": {"doctor": 1, "teacher": 1, "nurse": 1},
        "young": {"doctor": 1},
    }


def test_counts_merge_across_shards_and_render():
    a, b = Audit(), Audit()
    a.add(TEXT)
    b.add("He is a nurse. She is a nurse too.")
    total = sorted_counts(_merged(a.counts, b.counts))
    assert (total["docs"] == 2 and total["cooccurrence"]["female"]["nurse"] == 2
            and total["cooccurrence"]["male"]["nurse"] == 1)
    table = "\n".join(report_lines(total, top=3))
    assert "| gender | female | 4 | 2 | 57.1 % |" in table  # 4 of 7 gendered mentions
    assert "| nurse | 3 | 2 | 1 | 67 % | 0 | 0 |" in table


def _merged(a: dict, b: dict) -> dict:
    out: dict = {}
    add_counts(out, a)
    add_counts(out, b)
    return out


@pytest.mark.parametrize("text, swapped", [
    ("She gave him her book.", "He gave her his book."),
    ("I saw her. Her dog barked.", "I saw him. His dog barked."),
    ("He gave her the key and her own lamp.", "She gave him the key and his own lamp."),
    ("The book is his, not hers.", "The book is hers, not his."),
    ("The KING met Mr. Smith's wife.", "The QUEEN met Mrs. Smith's husband."),
    ("Ahmed and his brothers", "Ahmed and her sisters"),  # names are not swapped
    ("history, therapist, manhood", "history, therapist, manhood"),  # only whole words
])
def test_gender_swap(text: str, swapped: str):
    assert gender_swap(text) == swapped


def test_swap_twice_is_identity_on_unambiguous_text():
    text = "The king told his son that the queen and her daughter were coming."
    assert gender_swap(gender_swap(text)) == text


# --- add_batch: the same counts as the per-document reference ---------------------------------------



def _reference_add(audit: Audit, text: str) -> None:
    """The per-document implementation add_batch replaced (string tokens, one text at a time)."""
    m = audit_module
    low = text.lower()
    audit.counts["docs"] += 1
    counts = Counter(m._WORD.findall(low))
    present = counts.keys() & m._VOCAB
    groups: set[str] = set()
    for word in present:
        for group in m._TERM_GROUPS.get(word, ()):
            audit._bump("mentions", group, word, counts[word])
            groups.add(group)
        if word in m._OCCUPATION_FORMS:
            audit._bump("occupations", m._OCCUPATION_FORMS[word], n=counts[word])
    if not m._AGE_WORDS.isdisjoint(counts):
        for match in m._AGE_PHRASE.finditer(low):
            group = "young" if match[1] == "young" else "old"
            audit._bump("mentions", group, f"{match[1]} {match[2]}")
            groups.add(group)
    for group in groups:
        audit._bump("docs_with", group)
    if groups and (job_words := present & m._OCCUPATION_FORMS.keys()):
        for sentence in m._SENTENCE.split(low):
            if not any(w in sentence for w in job_words):
                continue
            words = set(m._WORD.findall(sentence))
            jobs = {m._OCCUPATION_FORMS[w] for w in words & m._OCCUPATION_FORMS.keys()}
            if not jobs:
                continue
            groups_here = {g for w in words & m._TERM_GROUPS.keys() for g in m._TERM_GROUPS[w]}
            groups_here |= {"young" if a[1] == "young" else "old" for a in m._AGE_PHRASE.finditer(sentence)}
            for group in groups_here:
                for job in jobs:
                    audit._bump("cooccurrence", group, job)


HAND = [
    TEXT, "", "   ", "no people here at all", "He is a nurse. She is a nurse too.",
    "The old\n\nman and the young   women met the Doctors.\n\nThe OLD MAN was a baker!",
    "doctor2 man3 café-owner Mané the 1st nurse² said: she_is a teacher; old man_woman.",  # [a-z]+ runs inside words
    "她是一位医生。 She is a 医生 doctor and he a teacher。老人 old men, aged folk, elderly couple",
    "Mr. Smith, the farmer, and Mrs. Smith, the farmer's wife. Kids and teens; the miners' grandma.",
    "An aged person.\nA young fellow? The elderly couples... soldiers, SOLDIERS, Soldier!",
]


def _batch_counts(texts: list[str], size: int) -> dict:
    audit = Audit()
    for i in range(0, len(texts), size):
        audit.add_batch(WordArrays.from_texts(texts[i:i + size]))
    return sorted_counts(audit.counts)


def _reference_counts(texts: list[str]) -> dict:
    audit = Audit()
    for text in texts:
        _reference_add(audit, text)
    return sorted_counts(audit.counts)


@pytest.mark.parametrize("size", [1, 7, 1024])
def test_add_batch_equals_per_document_counts(size: int):
    texts = HAND + sample_texts()
    assert len(texts) > 50
    expected = _reference_counts(texts)
    assert expected["cooccurrence"] and expected["mentions"]["old"]
    assert _batch_counts(texts, size) == expected


def test_add_is_one_document_batch():
    for text in HAND:
        one = Audit()
        one.add(text)
        assert sorted_counts(one.counts) == _reference_counts([text])


_WORDS = sorted(audit_module._VOCAB | audit_module._AGE_WORDS) + ["person", "folk", "the", "mill", "x1", "été"]
_TOKEN = st.tuples(st.sampled_from(_WORDS), st.sampled_from(["", "", "", "2", "é", "_x", "'s", "ß"]),
                   st.sampled_from([" ", " ", ". ", "! ", "\n", "\n\n", " \n \n", ", ", "-", "。",
                                   "?\u00a0", ".\x1c", "\n\x1c\n", "\n\u2003\t\n", "\n.\n", "\x00"]),
                   st.booleans()).map(lambda t: (t[0].upper() if t[3] else t[0]) + t[1] + t[2])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_TOKEN, max_size=20).map("".join), min_size=1, max_size=6))
def test_add_batch_equals_per_document_counts_on_random_texts(texts: list[str]):
    assert _batch_counts(texts, len(texts)) == _reference_counts(texts)


def test_observations_of_some_documents_count_just_those():
    # The filter observes every screened document, then counts only the ones dedup keeps.
    texts = HAND + sample_texts()
    kept = np.flatnonzero(np.arange(len(texts)) % 3 == 1)
    audit = Audit()
    audit.add_observations(observe(WordArrays.from_texts(texts)).take(kept), len(kept))
    assert sorted_counts(audit.counts) == _reference_counts([texts[i] for i in kept])
    nothing = Audit()
    nothing.add_observations(observe(WordArrays.from_texts(texts)).take(np.zeros(0, dtype=np.int64)), 0)
    assert sorted_counts(nothing.counts) == _reference_counts([])
