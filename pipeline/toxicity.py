"""Offensive / hateful content scoring for the filter stage: a lexicon plus structural hate patterns.

    offensive_score(text) -> float in [0, 1]       one score for the whole text
    line_scores(text)     -> list[float]           one score per line of text.split("\\n")
    line_score_bound(text) -> float                no line of text scores more (skips line_scores)
    match_details(text)   -> ((match, weight, category), ...), word count      for notes and debugging

Evidence comes from data files in `pipeline/lexicons/`:
  offensive.txt       words and phrases with a weight and a category (profanity, insult); leetspeak
                      and starred spellings ("sh1t", "f**k") are derived from the words automatically;
  hate_patterns.txt   regexes for dehumanising or eliminationist statements about groups of people
                      ("<group> are vermin", "... should be wiped out"), weighted high, without slurs.
Every match i has a weight w_i (how sure one occurrence makes us). A text scores
max(max_i w_i, 1 - prod_i (1 - w_i) ** d), where d = min(1, 60 / words) dilutes the combined
evidence of many mild words in a long text: one strong word in a line scores >= 0.5, a long story
with a few mild words ("damn", "idiot", "hell") stays well below it. Matching is on whole words only
(no Scunthorpe problem); words with an innocent sense ("ass" the animal, "cock" the bird, "bitch" the
dog) weigh little, and not at all when the context names the innocent sense; "Dick" with a capital
is a name. Fairy-tale violence (kill, die, blood, burned) is not in the lexicon at all.
`pipeline.toxicity_scan.offensive_candidates` finds, for a whole batch, the documents worth scoring.

Speed: a rule's regex runs only when the words present satisfy its triggers, only within 200
characters of its anchor words, and only where its gate (a fast regex every match contains) matches.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from pipeline.textclean import lower_words
from pipeline.wordarrays import WordArrays

_LEXICONS = Path(__file__).parent / "lexicons"
_DILUTION_WORDS = 60  # up to this many words, evidence combines undiluted
_WINDOW = 200  # characters searched on each side of a pattern's anchor word (patterns are shorter)
_TOKEN = re.compile(r"[a-z0-9]+")
# A token with leetspeak or masking characters inside: "sh1t", "f*ck", "a$$hole", "b!tch".
_OBFUSCATED = re.compile(r"(?<![\w*@$!])[a-z@$!*0-9]*[a-z][a-z@$!*0-9]*[@$!*0-9][a-z@$!*0-9]*[a-z@$*0-9](?![\w*@$])")
# Opens with one character class (the rare characters), so the scan runs ~10x faster than a pattern
# opening with a lookbehind; '!' only counts inside a word ("b!tch", not "oh!").
_OBFUSCATION_HINT = re.compile(r"[@$*0-9!](?:(?<=[a-z][@$*0-9])|(?<=[@$*0-9])(?=[a-z])|(?<=[a-z]!)(?=[a-z]))")
_LEET = str.maketrans({"@": "a", "4": "a", "3": "e", "1": "i", "!": "i", "0": "o", "$": "s", "5": "s", "7": "t"})

Triggers = tuple[tuple[frozenset[str], ...], ...]  # any alternative; in it, every group needs a word


class Entry(NamedTuple):
    weight: float
    category: str
    cased: re.Pattern | None  # for name-like words: the lower-case/ALL-CAPS occurrences only
    innocent: frozenset[str]  # context words that select the harmless sense of the word


class Rule(NamedTuple):
    regex: re.Pattern
    weight: float
    category: str
    triggers: Triggers  # the regex only runs when the words present satisfy these
    kind: str  # "phrase" (offensive.txt) or "pattern" (hate_patterns.txt)
    gate: re.Pattern | None  # a fast regex every match contains: the regex runs only where it matches


class Lexicon(NamedTuple):
    words: dict[str, Entry]
    masks: dict[str, str]  # starred spelling -> word
    rules: list[Rule]
    rules_by_word: dict[str, list[int]]  # anchor word -> indexes of the rules it may fire


def _star_masks(word: str) -> set[str]:
    """'fuck' -> {'f*ck', 'fu*k', 'f**k', 'f*k', ...}: inner letters hidden behind one or more stars."""
    masks = set()
    for start in range(1, len(word) - 1):
        for length in range(1, min(3, len(word) - 1 - start) + 1):
            for stars in {1, length}:
                masks.add(word[:start] + "*" * stars + word[start + length :])
    return masks


def _rows(name: str) -> list[list[str]]:
    text = (_LEXICONS / name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _expand(pattern: str, macros: dict[str, str]) -> str:
    """Replace {GROUP}-style macros (regex repetition braces like {0,2} are left alone)."""
    return re.sub(r"\{([A-Z]+)\}", lambda m: macros[m.group(1)], pattern)


def _parse_triggers(spec: str, macro_words: dict[str, list[str]]) -> Triggers:
    """'a|b+c,d' -> ((frozenset{a, b}, frozenset{c}), (frozenset{d},)); '@GROUP' = that macro's key words."""
    def group(text: str) -> frozenset[str]:
        return frozenset(w for part in text.split("|") for w in (macro_words[part[1:]] if part.startswith("@") else [part]))

    return tuple(tuple(group(g) for g in alt.split("+")) for alt in spec.split(","))


# "\b", maybe an optional group ("(?:all\s+|those\s+)?"), a group of people, then whitespace
_PEOPLE_OPENING = re.compile(r"\\b(?:\(\?:[^()]*\)\?)?\{(?:GROUP|SUBJECT)\}\\s\+")


def _gate(pattern: str, macros: dict[str, str]) -> re.Pattern | None:
    """A rule's fast pre-check, derived from its (unexpanded) regex: what follows an opening group of
    people ("{GROUP} should ..." -> "should ..."), or the regex without a leading \\b when a letter
    follows. Either is part of every match, so no match is lost; and re skips ahead to a literal opening
    with a fast search but not past an assertion or a long alternation: "\\byour kind" scans ~15x
    slower than "your kind". (Before other alternations the \\b stays: it prunes positions inside words.)"""
    if m := _PEOPLE_OPENING.match(pattern):
        return re.compile(_expand(pattern[m.end() :], macros), re.MULTILINE)
    if pattern.startswith(r"\b") and pattern[2:3].isalpha():
        return re.compile(_expand(pattern[2:], macros), re.MULTILINE)
    return None


def _key_words(alternatives: str) -> list[str]:
    """A macro's trigger words: the first distinctive word of each alternative ('asylum seekers' -> 'asylum')."""
    return [next((w for w in _TOKEN.findall(alt) if w != "the"), alt) for alt in alternatives.split("|")]


@lru_cache(maxsize=1)
def _lexicon() -> Lexicon:
    """Words, obfuscated spellings and phrase/pattern rules with an anchor-word index, loaded once."""
    words: dict[str, Entry] = {}
    rules: list[Rule] = []
    rows = _rows("offensive.txt")
    for term, weight, category, *flags in (row for row in rows if " " not in row[0]):
        cased = re.compile(rf"\b(?:{term}|{term.upper()})\b") if "cased" in flags else None
        innocent = next((f.split("=", 1)[1].split(",") for f in flags if f.startswith("innocent=")), [])
        words[term] = Entry(float(weight), category, cased, frozenset(innocent))
    for term, weight, category, *_ in (row for row in rows if " " in row[0]):
        # A phrase needs all its words; its anchor (searched around) is its rarest-looking word,
        # a lexicon word if it has one, else the longest: "you idiot" -> "idiot".
        parts = term.split()
        anchor = min(parts, key=lambda w: (w not in words, -len(w)))
        groups = tuple(frozenset([w]) for w in [anchor] + [w for w in parts if w != anchor])
        pattern = r"\b" + r"\s+".join(map(re.escape, parts)) + r"\b"
        rules.append(Rule(re.compile(pattern), float(weight), category, (groups,), "phrase", _gate(pattern, {})))
    masks = {mask: w for w in words if len(w) >= 3 for mask in _star_masks(w)}
    macros: dict[str, str] = {}
    macro_words: dict[str, list[str]] = {}
    for row in _rows("hate_patterns.txt"):
        if row[0].startswith("@"):  # macro definition, may use earlier macros
            macros[row[0][1:]] = "(?:" + _expand(row[1], macros) + ")"
            macro_words[row[0][1:]] = _key_words(row[1])
            continue
        weight, category, triggers, pattern, *gate = row
        rules.append(Rule(re.compile(_expand(pattern, macros), re.MULTILINE), float(weight), category,
                          _parse_triggers(triggers, macro_words), "pattern",
                          re.compile(_expand(gate[0], macros), re.MULTILINE) if gate else _gate(pattern, macros)))
    index: dict[str, list[int]] = {}
    for i, rule in enumerate(rules):
        for word in {w for alt in rule.triggers for w in alt[0]}:
            index.setdefault(word, []).append(i)
    return Lexicon(words, masks, rules, index)


def _obfuscated_words(lowered: str, lex: Lexicon) -> list[str]:
    found = []
    for token in _OBFUSCATED.findall(lowered):
        plain = token.translate(_LEET)
        if hit := plain if plain in lex.words else lex.masks.get(plain) or lex.masks.get(token):
            found.append(hit)
    return found


def _windows(lowered: str, words: set[str]) -> list[tuple[int, int]]:
    """Merged (start, end) spans of _WINDOW characters around every occurrence of `words`."""
    if len(lowered) <= 2 * _WINDOW or sum(map(lowered.count, words)) * 2 * _WINDOW >= len(lowered) // 2:
        return [(0, len(lowered))]  # short text, or common anchors: one scan beats many windows
    spans = []
    for word in words:
        at = lowered.find(word)
        while at != -1:
            spans.append((max(0, at - _WINDOW), at + len(word) + _WINDOW))
            at = lowered.find(word, at + len(word))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _rule_matches(rule: Rule, lowered: str, present: set[str]) -> list[str]:
    alts = [alt for alt in rule.triggers if all(not group.isdisjoint(present) for group in alt)]
    if not alts:
        return []
    # Patterns open with long alternations that are slow to scan over a whole book: search only
    # near the anchor words that made the rule a candidate (a match spans far less than _WINDOW).
    anchors = set().union(*(alt[0] & present for alt in alts))
    windows = _windows(lowered, anchors)
    if rule.gate is not None:
        windows = [(start, end) for start, end in windows if rule.gate.search(lowered, start, end)]
    return [m.group() for start, end in windows for m in rule.regex.finditer(lowered, start, end)]


@lru_cache(maxsize=8)  # line mode asks about the same document twice (line_scores, then offensive_score)
def match_details(text: str, harmless_senses: bool = True) -> tuple[tuple[tuple[str, float, str], ...], int]:
    """((matched text, weight, category), ... for every match in `text`; its word count).

    harmless_senses=False also counts the words (and phrases) whose harmless sense the context selects:
    every match any line of `text` could have alone is then among these."""
    lex = _lexicon()
    lowered, tokens, _ = lower_words(text)
    present = set(tokens)
    found: list[tuple[str, float, str]] = []
    hits = present & lex.words.keys()
    # Words whose harmless sense the context selects ("the ass brayed") count neither alone nor in phrases.
    innocent = _innocent_senses(hits, present, lex) if harmless_senses else set()
    for word in hits - innocent:
        entry = lex.words[word]
        n = len(entry.cased.findall(text)) if entry.cased else tokens.count(word)
        found += [(word, entry.weight, entry.category)] * n
    if _OBFUSCATION_HINT.search(lowered):
        found += [(w, lex.words[w].weight, lex.words[w].category) for w in _obfuscated_words(lowered, lex)]
    for i in sorted({i for w in present & lex.rules_by_word.keys() for i in lex.rules_by_word[w]}):
        rule = lex.rules[i]
        if rule.kind == "pattern" or not any(innocent & group for group in rule.triggers[0]):
            found += [(m, rule.weight, rule.category) for m in _rule_matches(rule, lowered, present)]
    return tuple(found), len(tokens)


def _innocent_senses(hits: set[str], present: set[str], lex: Lexicon) -> set[str]:
    return {w for w in hits if not lex.words[w].innocent.isdisjoint(present)}


def has_innocent_sense(text: str) -> bool:
    """Whether `text` uses a lexicon word in its harmless sense ("the ass brayed", "the cock crowed")."""
    lex = _lexicon()
    present = set(lower_words(text)[1])
    return bool(_innocent_senses(present & lex.words.keys(), present, lex))


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
        from pipeline.toxicity_scan import offensive_candidates  # it builds on this module

        maybe = offensive_candidates(WordArrays.from_texts(lines)).tolist()
    else:
        maybe = [True] * len(lines)
    return [offensive_score(line) if hit and line.strip() else 0.0 for line, hit in zip(lines, maybe)]
