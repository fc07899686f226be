"""Offensive-content scoring: the labelled evaluation set, fairy-tale controls, obfuscation, line mode."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.offensive import SETS, load
from pipeline.text.offensive.lexicon import _rows, load_lexicon
from pipeline.text.offensive.prescreen import offensive_candidates
from pipeline.text.offensive.score import line_score_bound, line_scores, match_details, offensive_score
from pipeline.text.wordarrays import WordArrays
from tests.conftest import sample_texts

THRESHOLD = 0.5


def _eval_set() -> list[tuple[int, str]]:
    return load("eval_offensive.tsv")


def test_precision_and_recall_on_the_evaluation_set():
    rows = _eval_set()
    assert sum(label for label, _ in rows) >= 60 and sum(1 - label for label, _ in rows) >= 120
    flagged = [(label, offensive_score(text) >= THRESHOLD) for label, text in rows]
    tp = sum(1 for label, hit in flagged if label and hit)
    fp = sum(1 for label, hit in flagged if not label and hit)
    fn = sum(1 for label, hit in flagged if label and not hit)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision >= 0.95, f"precision {precision:.3f}"
    assert recall >= 0.90, f"recall {recall:.3f}"


def test_lexicon_holds_words_and_short_phrases_not_sentences():
    # Guards against "tuning" by pasting evaluation sentences into the lexicon.
    assert all(len(row[0].split()) <= 4 for row in _rows("offensive.txt"))
    evaluation = {text.lower() for _, text in _eval_set()}
    assert not any(row[0] in evaluation for row in _rows("offensive.txt"))


@pytest.mark.parametrize(
    "text",
    [
        "The wolf ate the seven little goats, all but the youngest.",
        "The knight slew the dragon and the people cheered.",
        "The witch was pushed into the oven and burned.",
        "“I will kill you and grind your bones!” roared the giant.",
        "He would rather die than betray the king, and his blood ran cold.",
        "The preacher said the wicked would burn in hell for ever.",
        "“Damn,” said the sailor, and went back to his rope.",
        "The ass carried the miller's sacks and brayed at the gate.",
        "Dick Whittington and his cat went to London.",
        "The Scunthorpe cocktail party had an assortment of classic Essex biscuits.",
        "The cock crowed, the hens clucked, and the pussy cat chased a mouse.",
        "The bitch and her puppies slept in the kennel by the stove.",
        "She pricked her finger on the spindle and fell asleep.",
        "“Don't be an idiot,” laughed his sister.",
        "The farmer said the rats are vermin and set a trap in the barn.",
        "Refugees arrived at the harbour and the village gave them bread.",
    ],
)
def test_fairy_tales_and_innocent_senses_are_not_flagged(text: str):
    assert offensive_score(text) < THRESHOLD


@pytest.mark.parametrize(
    "text",
    [
        "fuck off",
        "What a f*cking mess.",
        "sh1t happens",
        "You absolute a$$hole.",
        "Get out, you f**king b!tch.",
        "You are a worthless piece of shit.",
        "Those people are vermin and should be wiped out.",
        "People from the hill villages are animals, not people.",
        "Go back to where you came from.",
        "Immigrants don't deserve to live.",
    ],
)
def test_offensive_lines_are_flagged(text: str):
    assert offensive_score(text) >= THRESHOLD


def test_dick_as_a_name_versus_the_insult():
    assert offensive_score("Dick and Jane went up the hill.") == 0.0
    assert offensive_score("Don't be a dick, Jane.") >= THRESHOLD


def test_scores_are_bounded_and_per_line():
    text = "A quiet morning.\nfuck this\n\nThe birds sang."
    scores = line_scores(text)
    assert len(scores) == len(text.split("\n")) == 4
    assert scores[1] >= THRESHOLD and scores[0] == scores[2] == scores[3] == 0.0
    assert all(0.0 <= s <= 1.0 for s in scores + [offensive_score(text)])
    assert line_scores("") == [0.0] and line_scores("one line") == [0.0]


def test_one_mild_word_in_a_long_story_stays_below_threshold():
    story = " ".join(["The miller walked to the river and watched the water turn the wheel."] * 30)
    assert offensive_score(story + " “Damn this rain,” he said. What an idiot he had been.") < THRESHOLD
    assert offensive_score("damn it, you idiot, shut up, you stupid loser") >= THRESHOLD  # but dense insults add up


def test_one_strong_word_flags_its_line_and_the_document():
    lines = [f"Line {i} of a long and peaceful story about boats and gulls." for i in range(20)]
    lines[7] = "“Fuck you!” shouted the drunk man at the harbour."
    scores = line_scores("\n".join(lines))
    assert [i for i, s in enumerate(scores) if s >= THRESHOLD] == [7]
    assert offensive_score("\n".join(lines)) >= THRESHOLD
    assert offensive_score("\n".join(lines[:7] + lines[8:])) == 0.0


def test_match_details_names_what_matched():
    found, n_words = match_details("You worthless scum.")
    assert ("worthless scum", 0.85, "insult") in found and n_words == 3


# --- batch prescreen: offensive_candidates is a superset of the documents with a match ------------



def _assert_superset(texts: list[str]) -> np.ndarray:
    candidates = offensive_candidates(WordArrays.from_texts(texts))
    assert candidates.shape == (len(texts),) and candidates.dtype == bool
    for text, candidate in zip(texts, candidates):
        if not candidate:
            assert not match_details(text)[0], text
            assert offensive_score(text) == 0.0 and line_scores(text) == [0.0] * len(text.split("\n"))
    return candidates


def test_candidates_cover_every_match_on_the_evaluation_set():
    rows = _eval_set()
    candidates = _assert_superset([text for _, text in rows])
    assert all(c for (label, _), c in zip(rows, candidates) if label)  # every offensive line is a candidate


def test_candidates_cover_every_match_on_the_sample_corpus():
    texts = sample_texts()
    assert len(texts) > 50
    candidates = _assert_superset(texts)
    assert candidates.mean() < 0.5  # ordinary text is mostly screened out


def test_candidates_of_small_batches():
    assert offensive_candidates(WordArrays.from_texts([])).shape == (0,)
    assert offensive_candidates(WordArrays.from_texts(["", "   "])).tolist() == [False, False]
    texts = ["fuck off", "The ass brayed at the miller.", "You are an ass.", "sh1t happens", "the year 1999 and 2nd",
             "Those people are vermin.", "p!$$ and 2nd", "a quiet morning"]
    got = offensive_candidates(WordArrays.from_texts(texts)).tolist()
    assert got[0] and got[2] and got[3] and got[5] and not got[7]
    _assert_superset(texts)


def _vocabulary() -> list[str]:
    lex = load_lexicon()
    words = set(lex.words)
    for rule in lex.rules:
        words.update(w for alt in rule.triggers for group in alt for w in group)
    for entry in lex.words.values():
        words.update(entry.innocent)
    return sorted(words)


_LEETS = {"a": "@4", "e": "3", "i": "1!", "o": "0", "s": "$5", "t": "7"}


@st.composite
def _variant(draw, word: str) -> str:
    kind = draw(st.sampled_from(["plain", "plain", "upper", "title", "leet", "star", "suffix"]))
    if kind == "upper":
        return word.upper()
    if kind == "title":
        return word.title()
    if kind == "leet":
        return "".join(draw(st.sampled_from([c, *_LEETS.get(c, "")])) for c in word)
    if kind == "star" and len(word) >= 3:
        i = draw(st.integers(1, len(word) - 2))
        j = draw(st.integers(i + 1, min(len(word) - 1, i + 3)))
        return word[:i] + "*" * draw(st.sampled_from([1, j - i])) + word[j:]
    if kind == "suffix":
        return word + draw(st.sampled_from(["!", "!!", "2", "*", "$", "é", "_"]))
    return word


_ORDINARY = ["the", "a", "and", "people", "house", "river", "they", "are", "is", "all", "go", "back", "to", "you",
             "1st", "2023", "mp3", "wow", "hello", "john@mail", "$5", "oh", "x"]
_SEPARATORS = [" ", " ", " ", "\n", "\n\n", ", ", ". ", "! ", "? ", " - ", "'", "’", ":", "(", "\t"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(_vocabulary() + _ORDINARY).flatmap(_variant),
                                   st.sampled_from(_SEPARATORS)), max_size=14)
                .map(lambda ws: "".join(w + s for w, s in ws)),
                min_size=1, max_size=8))
def test_candidates_are_a_superset_on_random_texts(texts: list[str]):
    _assert_superset(texts)


def test_candidates_cover_the_longest_word_spelled_with_a_trailing_bang():
    # A run "motherfuck3rs!" holds the token "motherfuck3rs" (as long as the longest lexicon word) before its '!'.
    _assert_superset(["motherfuck3rs! ", "motherfuck3rs!", "you b!tch!", "sh1t!"])


def test_line_scores_of_a_long_text_equal_each_line_alone():
    # Past 16 lines only the lines the prescreen keeps are scored: the result must not change.
    rows = _eval_set()
    lines = [text for _, text in rows[:30]] + ["", "The wolf ate the grandmother."] + [text for _, text in rows[-30:]]
    expected = [offensive_score(line) if line.strip() else 0.0 for line in lines]
    assert line_scores("\n".join(lines)) == expected and max(expected) >= THRESHOLD


def _assert_bound(text: str) -> None:
    assert max(line_scores(text)) <= line_score_bound(text), text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_vocabulary() + _ORDINARY).flatmap(_variant), st.sampled_from(_SEPARATORS)),
                min_size=1, max_size=40).map(lambda ws: "".join(w + s for w, s in ws)))
def test_no_line_scores_above_the_bound_on_random_texts(text: str):
    # The filter skips line_scores when the bound is below the threshold: no line may score more.
    _assert_bound(text)


def test_no_line_scores_above_the_bound_on_labelled_lines_and_the_sample():
    rows = _eval_set()
    for k in range(0, len(rows), 9):  # documents of 9 lines, with harmless senses one line away from their word
        _assert_bound("\n".join(text for _, text in rows[k : k + 9]))
    _assert_bound("The ass\nwas a donkey that brayed.\nYou stupid ass.\n")
    for text in sample_texts():
        _assert_bound(text)
    assert line_score_bound("The miller ground the corn.\nHis dog slept.") == 0.0


def _labelled_texts() -> list[str]:
    return [text for name in SETS for _, text in load(name)]


@pytest.mark.parametrize("i", [i for i, rule in enumerate(load_lexicon().rules) if rule.gate is not None])
def test_a_gate_matches_inside_every_match_of_its_rule(i: int):
    # The slow regex only runs where the gate matches: the gate must hold within every match.
    rule = load_lexicon().rules[i]
    texts = [t.lower() for t in _labelled_texts() + sample_texts()]
    matches = 0
    for text in texts:
        for m in rule.regex.finditer(text):
            matches += 1
            assert rule.gate.search(text, m.start(), m.end()), (rule.regex.pattern[:60], m.group())
    if not rule.regex.pattern.endswith(rule.gate.pattern):  # written by hand, not a tail of the regex
        assert matches >= 3, f"a hand-written gate needs labelled examples of its rule: {rule.regex.pattern[:60]}"


def test_rule_windows_match_their_definition():
    """`_windows` (cached, stops counting at the threshold) against its plain definition: spans of _WINDOW
    characters around every occurrence of the anchor words, merged, or the whole text when that is shorter
    than 2 * _WINDOW or the anchors are common (occurrences * 2 * _WINDOW >= half the text)."""
    import random
    import re

    from pipeline.text.offensive import lexicon

    w = lexicon._WINDOW

    def plain(text: str, words: frozenset[str]) -> tuple[tuple[int, int], ...]:
        if len(text) <= 2 * w or sum(text.count(x) for x in words) * 2 * w >= len(text) // 2:
            return ((0, len(text)),)
        spans = sorted((max(0, m.start() - w), m.end() + w) for x in words for m in re.finditer(re.escape(x), text))
        merged: list[tuple[int, int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return tuple(merged)

    rng = random.Random(7)
    vocab = ["all", "them", "vermin", "those", "ll"]
    for _ in range(300):
        text = " ".join(rng.choice(vocab + ["filler"] * rng.randint(1, 40)) for _ in range(rng.randint(1, 1500)))
        words = frozenset(rng.sample(vocab, rng.randint(1, 3)))
        assert lexicon._windows(text, words) == plain(text, words)


def test_obfuscated_words_scan_only_near_signs_and_find_what_a_whole_scan_finds():
    """`_obfuscated_words` runs its regex only from the whitespace before a letter+sign+character spot to the
    whitespace after it: on random texts of words, signs and obfuscated spellings it finds what
    `_OBFUSCATED.findall` over the whole text finds."""
    import random

    from pipeline.text.offensive import score

    lex = load_lexicon()

    def plain(lowered: str) -> list[str]:
        found = []
        for token in score._OBFUSCATED.findall(lowered):
            p = token.translate(score.LEET)
            if hit := p if p in lex.words else lex.masks.get(p) or lex.masks.get(token):
                found.append(hit)
        return found

    rng = random.Random(3)
    pieces = ["sh1t", "f*ck", "f**k", "a$$hole", "b!tch", "b!!ch", "oh!", "1st", "*emphasis*", "x9", "word,f*ck",
              "the", "and", "\n", "\t", "!", "$5", "sh!t!", "a", "fuck"]
    for _ in range(400):
        text = "".join(rng.choice(pieces) + rng.choice([" ", "", "\n", ", "]) for _ in range(rng.randint(1, 60)))
        assert score._obfuscated_words(text, lex) == plain(text), text


def test_gates_are_derived_from_a_top_level_tail_that_opens_with_letters():
    from pipeline.text.offensive.lexicon import _gate, _literal_tail

    assert _literal_tail(r"\b(?:keep|say\s+that)\s*,?\s+and\s+i(?:[’']ll|\s+will)\b") == r"and\s+i(?:[’']ll|\s+will)\b"
    assert _literal_tail(r"(?:^|[.!?]\s*)(?:just\s+)?go\s+die\b") == r"go\s+die\b"
    assert _literal_tail(r"\bkill\s+you|\bgo\s+die") is None, "a top-level alternation has no common tail"
    assert _literal_tail(r"(?:a|b)\s+[a-z]+x") is None, "letters inside a class or under a quantifier are no tail"
    assert _literal_tail(r"\bwe\s+hate") == r"hate", "\\b before letters is not their start ('we' follows it)"
    # An optional opening is dropped: "(?:secretly\s+)?control" scans ~5x slower than "control".
    gate = _gate(r"\b{GROUP}\s+(?:secretly\s+)?(?:control|run)\s+the\s+banks\b", {"GROUP": "(?:x|y)"})
    assert gate is not None and gate.pattern == r"(?:control|run)\s+the\s+banks\b"


@pytest.mark.parametrize("text", [
    "Burn your house down, that's what I'll do.",
    "You're going to end up in a body bag, mate.",
    "I hope someone shoots you in the street.",
    "Traitors like him deserve a bullet.",
    "Next time we see you, you're dead.",
    "Your family won't be safe, I promise.",
    "I'm gonna beat you to a pulp.",
    "You are so utterly pathetic.",
    "What a brainless little clown you are.",
    "Shut up already, you parasite.",
])
def test_threats_and_insults_without_swear_words_score_as_offensive(text: str):
    assert offensive_score(text) >= 0.5, match_details(text)


@pytest.mark.parametrize("text", [
    '"I will eat you up!" said the wolf.',
    '"Give me the ball or I will hurt you!" the bully shouted.',
    '"I\'ll beat you to the tree!" laughed Sam.',
    "Be careful, you'll break your neck on those stairs.",
    "Watch your back on the mountain path, the guide warned.",
    "The hunters tracked the deer down by the river.",
    "You are so kind to help me.",
    "What a lovely little garden you have.",
])
def test_fiction_threats_warnings_and_kind_words_are_not_those(text: str):
    assert offensive_score(text) < 0.5, match_details(text)
