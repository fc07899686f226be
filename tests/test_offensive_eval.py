"""Offensive-content scorer on the two labelled sets the lexicon was tuned on, and their hard negatives.

Both sets asserted on here are tuning sets: eval_offensive.tsv from the start, and
eval_offensive_heldout.tsv (named for how it began: written before the lexicon was read, blind recall
0.67) since the tuning round its misses prompted brought it to 0.99. These tests guard against
regressions on them; they do not measure how the rules generalise. That figure comes only from a set
nothing was tuned on: eval_offensive_blind2.tsv, which benchmarks/offensive.py reports and which is
deliberately not asserted on here (a test on it would invite tuning to it). Hard negatives are the clean
lines that name violence, a group of people, a word with an innocent sense, anatomy or slurs: the lines
a lexicon is most tempted to drop.
"""

from __future__ import annotations

import re

import pytest

from benchmarks.offensive import load, measure
from pipeline.text.offensive.score import offensive_score

THRESHOLD = 0.5
HARD_CUES = re.compile(
    r"\b(?:kill\w*|slew|slain|die[sd]?|dying|dead|death|blood\w*|burn\w*|flames?|fire|hang\w*|murder\w*|"
    r"ate|eat|swallow\w*|devour\w*|gobble\w*|tore|cut|knife|axe|sword|shot|executioner|beheaded|throat|"
    r"witch\w*|wolf|wolves|giant|ogre|troll|dragon|cyclops|serpent|grendel|huntsman|hunter|pirates|"
    r"hell\w*|damn\w*|devil|curse\w*|stupid|idiot|fool|scoundrel|savage|plague|vermin|rats|pests?|weeds|"
    r"immigrants?|refugees?|foreigners|jews?|jewish|muslims?|christians|women|gay|lesbians|chinese|"
    r"mexican|irish|people|folk|racial|slurs?|word|queer|hate\w*|attacks?|deported|exterminate|"
    r"ass|cock\w*|bitch|pussy|dick\w*|prick\w*|tits?|shitake|scunthorpe|sussex|essex|middlesex|penistone|"
    r"wiped|crushed|destroy|beaten|flogged|bleeds|bodies|pecked|knives|nails|head|scum|oaf|animals|dam|"
    r"assistant|assortment|assessed|class|bass|hitchcock|penis|testicles|rectum|anus|breast|cervix|urine|stool)\b",
    re.I,
)


def _hard_negatives(name: str) -> list[str]:
    return [text for label, text in load(name) if not label and HARD_CUES.search(text)]


def test_second_tuning_set_formerly_heldout_size_and_precision_recall():
    rows = load("eval_offensive_heldout.tsv")
    assert sum(label for label, _ in rows) >= 60 and sum(1 - label for label, _ in rows) >= 120
    assert len(_hard_negatives("eval_offensive_heldout.tsv")) >= 40
    r = measure(rows, THRESHOLD)
    assert r["precision"] >= 0.95, f"precision {r['precision']:.3f}: {r['wrong']}"
    assert r["recall"] >= 0.90, f"recall {r['recall']:.3f}: {r['wrong']}"


def test_precision_on_the_first_tuning_set_holds():
    r = measure(load("eval_offensive.tsv"), THRESHOLD)
    assert r["precision"] >= 0.95 and r["recall"] >= 0.90, r["wrong"]


@pytest.mark.parametrize(
    "text", _hard_negatives("eval_offensive_heldout.tsv") + _hard_negatives("eval_offensive.tsv")
)
def test_hard_negatives_of_the_tuning_sets_are_not_flagged(text: str):
    assert offensive_score(text) < THRESHOLD
