"""Offensive / hateful content scoring for the filter stage: the lexicon's matches combined into a score.

    offensive_score(text) -> float in [0, 1]       one score for the whole text
    line_scores(text)     -> list[float]           one score per line of text.split("\\n")
    line_score_bound(text) -> float                no line of text scores more (skips line_scores)
    match_details(text)   -> ((match, weight, category), ...), word count      for notes and debugging

Every match i (see `lexicon`) has a weight w_i (how sure one occurrence makes us). A text scores
max(max_i w_i, 1 - prod_i (1 - w_i) ** d), where d = min(1, 60 / words) dilutes the combined
evidence of many mild words in a long text: one strong word in a line scores >= 0.5, a long story
with a few mild words ("damn", "idiot", "hell") stays well below it. Matching is on whole words only
(no Scunthorpe problem); words with an innocent sense ("ass" the animal, "cock" the bird, "bitch" the
dog) weigh little, and not at all when the context names the innocent sense; "Dick" with a capital
is a name. Fairy-tale violence (kill, die, blood, burned) is not in the lexicon at all.
`prescreen.offensive_candidates` finds, for a whole batch, the documents worth scoring.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from pipeline.text.offensive.lexicon import LEET, Lexicon, clear_rule_cache, load_lexicon, rule_matches
from pipeline.text.offensive.prescreen import offensive_candidates
from pipeline.text.wordarrays import WordArrays, lower_words

_DILUTION_WORDS = 60  # up to this many words, evidence combines undiluted
# A token with leetspeak or masking characters inside: "sh1t", "f*ck", "a$$hole", "b!tch".
_OBFUSCATED = re.compile(r"(?<![\w*@$!])[a-z@$!*0-9]*[a-z][a-z@$!*0-9]*[@$!*0-9][a-z@$!*0-9]*[a-z@$*0-9](?![\w*@$])")
# Opens with one character class (the rare characters), so the scan runs ~10x faster than a pattern
# opening with a lookbehind; '!' only counts inside a word ("b!tch", not "oh!").
_OBFUSCATION_HINT = re.compile(r"[@$*0-9!](?:(?<=[a-z][@$*0-9])|(?<=[@$*0-9])(?=[a-z])|(?<=[a-z]!)(?=[a-z]))")


# Every _OBFUSCATED match holds a letter, a sign after it and one more character: the scan runs only
# from the whitespace before such a spot to the whitespace after it (a book has a few, or none).
_OBFUSCATION_GATE = re.compile(r"[a-z][@$!*0-9][a-z@$!*0-9]")
_SPACE = re.compile(r"\s")


def _obfuscated_words(lowered: str, lex: Lexicon) -> list[str]:
    found, end = [], 0
    for gate in _OBFUSCATION_GATE.finditer(lowered):
        if gate.start() < end:  # inside the last span
            continue
        start = max(end, lowered.rfind(" ", end, gate.start()) + 1)  # at or before the token's start
        space = _SPACE.search(lowered, gate.end())
        end = space.start() if space else len(lowered)  # a token never holds whitespace
        for token in _OBFUSCATED.findall(lowered, start, end):
            plain = token.translate(LEET)
            if hit := plain if plain in lex.words else lex.masks.get(plain) or lex.masks.get(token):
                found.append(hit)
    return found


def match_details(text: str, harmless_senses: bool = True) -> tuple[tuple[tuple[str, float, str], ...], int]:
    """((matched text, weight, category), ... for every match in `text`; its word count).

    harmless_senses=False also counts the words (and phrases) whose harmless sense the context selects:
    every match any line of `text` could have alone is then among these."""
    found, n_words = _matches(text)
    return tuple((m, w, c) for m, w, c, vetoed in found if not (harmless_senses and vetoed)), n_words


@lru_cache(maxsize=8)  # line mode asks about the same document up to three times
def _matches(text: str) -> tuple[tuple[tuple[str, float, str, bool], ...], int]:
    """match_details with harmless senses included, each match marked whether a harmless sense vetoes it."""
    lex = load_lexicon()
    lowered, tokens, _ = lower_words(text)
    present = set(tokens)
    found: list[tuple[str, float, str, bool]] = []
    hits = present & lex.words.keys()
    # Words whose harmless sense the context selects ("the ass brayed") count neither alone nor in phrases.
    innocent = _innocent_senses(hits, present, lex)
    for word in hits:
        entry = lex.words[word]
        n = len(entry.cased.findall(text)) if entry.cased else tokens.count(word)
        found += [(word, entry.weight, entry.category, word in innocent)] * n
    if _OBFUSCATION_HINT.search(lowered):
        found += [(w, lex.words[w].weight, lex.words[w].category, False) for w in _obfuscated_words(lowered, lex)]
    for i in sorted({i for w in present & lex.rules_by_word.keys() for i in lex.rules_by_word[w]}):
        rule = lex.rules[i]
        vetoed = rule.kind != "pattern" and any(innocent & group for group in rule.triggers[0])
        found += [(m, rule.weight, rule.category, vetoed) for m in rule_matches(rule, lowered, present)]
    return tuple(found), len(tokens)


def forget() -> None:
    """Drop the per-text caches (one batch's documents): a document of a later batch is a new question."""
    _matches.cache_clear()
    clear_rule_cache()


def _innocent_senses(hits: set[str], present: set[str], lex: Lexicon) -> set[str]:
    return {w for w in hits if not lex.words[w].innocent.isdisjoint(present)}


def has_innocent_sense(text: str, context: str | None = None) -> bool:
    """Whether `text` uses a lexicon word in its harmless sense ("the ass brayed", "the cock crowed"): the
    word in `text`, the words that select its harmless sense in `text` or in `context` (its document)."""
    lex = load_lexicon()
    present = set(lower_words(text)[1])
    hits = {w for w in present & lex.words.keys() if lex.words[w].innocent}
    if not hits:
        return False
    around = present if context is None else present | set(lower_words(context)[1])  # lower_words is cached
    return bool(_innocent_senses(hits, around, lex))


def _combine(weights: list[float], n_words: int) -> float:
    if not weights:
        return 0.0
    evidence = sum(-math.log1p(-min(w, 0.999)) for w in weights)
    dilution = min(1.0, _DILUTION_WORDS / max(1, n_words))
    return round(max(max(weights), 1.0 - math.exp(-evidence * dilution)), 4)


def offensive_score(text: str) -> float:
    """How offensive `text` is, in [0, 1]; >= 0.5 (the default threshold) means drop."""
    found, n_words = match_details(text)
    return _combine([w for _, w, _ in found], n_words)


def line_score_bound(text: str) -> float:
    """A score no line of `text` can exceed: the undiluted evidence of every match in the whole text,
    harmless senses included (a line's matches are among them, and a line is never diluted more)."""
    found, _ = match_details(text, harmless_senses=False)
    return _combine([w for _, w, _ in found], 1)


def line_scores(text: str) -> list[float]:
    """offensive_score of each line of text.split('\\n'); texts without any match skip the per-line pass."""
    lines = text.split("\n")
    if len(lines) == 1:
        return [offensive_score(text)]
    if not match_details(text)[0]:
        return [0.0] * len(lines)
    # On a long text (a web page has hundreds of lines) only the lines that could match are scored one
    # by one; below ~16 lines the prescreen's fixed cost is more than it saves.
    if len(lines) > 16:
        maybe = offensive_candidates(WordArrays.from_texts(lines)).tolist()
    else:
        maybe = [True] * len(lines)
    return [offensive_score(line) if hit and line.strip() else 0.0 for line, hit in zip(lines, maybe)]
