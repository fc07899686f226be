"""Representation audit counts (hand-computed) and the gender-swap heuristics."""

from __future__ import annotations

import pytest

from pipeline.audit import Audit, gender_swap, report_lines, sorted_counts
from pipeline.docs import add_counts

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
    assert total["docs"] == 2 and total["cooccurrence"]["female"]["nurse"] == 2 and total["cooccurrence"]["male"]["nurse"] == 1
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
