"""The offensive-content lexicon: words, obfuscated spellings and phrase/pattern rules, loaded once.

    lex = load_lexicon()                    words, starred spellings, rules and their anchor-word index
    rule_matches(rule, lowered, present)    what one rule matches in a lower-cased text, near its anchors

Evidence comes from data files in `pipeline/text/lexicons/`:
  offensive.txt       words and phrases with a weight and a category (profanity, insult); leetspeak
                      and starred spellings ("sh1t", "f**k") are derived from the words automatically;
  hate_patterns.txt   regexes for dehumanising or eliminationist statements about groups of people
                      ("<group> are vermin", "... should be wiped out"), weighted high, without slurs.
`score` turns matches into a score; `prescreen` finds, for a whole batch, the documents worth scoring.

Speed: a rule's regex runs only when the words present satisfy its triggers, only within 200
characters of its anchor words, and only where its gate (a fast regex every match contains) matches.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from pipeline.text import LEXICONS

_WINDOW = 200  # characters searched on each side of a pattern's anchor word (patterns are shorter)
_TOKEN = re.compile(r"[a-z0-9]+")
# Leetspeak digits and signs -> the letters they stand for ("sh1t", "a$$").
LEET = str.maketrans({"@": "a", "4": "a", "3": "e", "1": "i", "!": "i", "0": "o", "$": "s", "5": "s", "7": "t"})

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
    text = (LEXICONS / name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _expand(pattern: str, macros: dict[str, str]) -> str:
    """Replace {GROUP}-style macros (regex repetition braces like {0,2} are left alone)."""
    return re.sub(r"\{([A-Z]+)\}", lambda m: macros[m.group(1)], pattern)


def _parse_triggers(spec: str, macro_words: dict[str, list[str]]) -> Triggers:
    """'a|b+c,d' -> ((frozenset{a, b}, frozenset{c}), (frozenset{d},)); '@GROUP' = that macro's key words."""
    def group(text: str) -> frozenset[str]:
        return frozenset(w for part in text.split("|")
                         for w in (macro_words[part[1:]] if part.startswith("@") else [part]))

    return tuple(tuple(group(g) for g in alt.split("+")) for alt in spec.split(","))


# "\b", maybe an optional group ("(?:all\s+|those\s+)?"), a group of people, then whitespace
_PEOPLE_OPENING = re.compile(r"\\b(?:\(\?:[^()]*\)\?)?\{(?:GROUP|SUBJECT)\}\\s\+")
_OPTIONAL_OPENING = re.compile(r"\(\?:[^()]*\)\?")  # "(?:secretly\s+)?"


def _gate(pattern: str, macros: dict[str, str]) -> re.Pattern | None:
    """A rule's fast pre-check, derived from its (unexpanded) regex: what follows an opening group of
    people ("{GROUP} should ..." -> "should ..."), the regex without a leading \\b when a letter follows,
    or else its longest top-level tail that opens with two letters ("... and i'll" -> "and i'll"). Each is
    part of every match, so no match is lost; and re skips ahead to a literal opening with a fast search
    but not past an assertion, an optional group or a long alternation: "\\byour kind" scans ~15x slower
    than "your kind", "(?:secretly\\s+)?control" ~5x slower than "control". (Before other alternations the
    \\b stays: it prunes positions inside words.)"""
    if m := _PEOPLE_OPENING.match(pattern):
        tail = pattern[m.end() :]
    elif pattern.startswith(r"\b") and pattern[2:3].isalpha():
        tail = pattern[2:]
    elif (tail := _literal_tail(pattern)) is None:
        return None
    while m := _OPTIONAL_OPENING.match(tail):  # an optional opening is not part of every match
        tail = tail[m.end() :]
    return re.compile(_expand(tail, macros), re.MULTILINE)


def _literal_tail(pattern: str) -> str | None:
    """The longest tail of `pattern` that is one of its top-level items onwards and opens with two
    letters (not under a quantifier); None if the pattern has a top-level alternation or no such tail."""
    depth, i, starts = 0, 0, []
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":  # a character class: skip to its closing bracket
            i = pattern.index("]", i + 2 if pattern[i + 1 : i + 2] in ("]", "^") else i + 1) + 1
            continue
        if c == "|" and depth == 0:
            return None
        depth += (c == "(") - (c == ")")
        if depth == 0 and i > 0 and re.match(r"[a-z]{2,}(?![?*{+])", pattern[i:]) and not pattern[i - 1].isalpha():
            starts.append(i)
        i += 1
    return pattern[starts[0] :] if starts else None


def _key_words(alternatives: str) -> list[str]:
    """A macro's trigger words: the first distinctive word of each alternative ('asylum seekers' -> 'asylum')."""
    return [next((w for w in _TOKEN.findall(alt) if w != "the"), alt) for alt in alternatives.split("|")]


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
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


@lru_cache(maxsize=256)  # many rules of one text share their anchor words ("all", the group names)
def _windows(lowered: str, words: frozenset[str]) -> tuple[tuple[int, int], ...]:
    """Merged (start, end) spans of _WINDOW characters around every occurrence of `words`."""
    whole = ((0, len(lowered)),)
    if len(lowered) <= 2 * _WINDOW:
        return whole
    # As many (non-overlapping) occurrences as str.count finds; this many or more: one scan beats many windows.
    most = -(-(len(lowered) // 2) // (2 * _WINDOW))
    spans = []
    for word in words:
        at = lowered.find(word)
        while at != -1:
            spans.append((max(0, at - _WINDOW), at + len(word) + _WINDOW))
            if len(spans) >= most:
                return whole
            at = lowered.find(word, at + len(word))
    return _merged(spans)


def _merged(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def rule_matches(rule: Rule, lowered: str, present: set[str]) -> tuple[str, ...]:
    alts = [alt for alt in rule.triggers if all(not group.isdisjoint(present) for group in alt)]
    if not alts:
        return ()
    return _matches_near(rule, lowered, frozenset().union(*(alt[0] & present for alt in alts)))


# The filter asks about one document up to three times (prescreen, line bound, score), a batch of
# documents at a time: the regexes run once (the filter clears the cache after each batch).
@lru_cache(maxsize=4096)
def _matches_near(rule: Rule, lowered: str, anchors: frozenset[str]) -> tuple[str, ...]:
    # Patterns open with long alternations that are slow to scan over a whole book: search only
    # near the anchor words that made the rule a candidate (a match spans far less than _WINDOW).
    windows = _windows(lowered, anchors)
    if rule.gate is not None:
        windows = tuple((start, end) for start, end in windows if rule.gate.search(lowered, start, end))
    return tuple(m.group() for start, end in windows for m in rule.regex.finditer(lowered, start, end))


def clear_rule_cache() -> None:
    _matches_near.cache_clear()
    _windows.cache_clear()
