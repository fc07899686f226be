"""Offensive / hateful content scoring for the filter stage: a lexicon plus structural hate patterns.

    offensive_score(text) -> float in [0, 1]       one score for the whole text
    line_scores(text)     -> list[float]           one score per line of text.split("\\n")
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
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.textclean import lower_words
from pipeline.wordarrays import WordArrays, WordIndex

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
        rx = re.compile(r"\b" + r"\s+".join(map(re.escape, parts)) + r"\b")
        rules.append(Rule(rx, float(weight), category, (groups,), "phrase"))
    masks = {mask: w for w in words if len(w) >= 3 for mask in _star_masks(w)}
    macros: dict[str, str] = {}
    macro_words: dict[str, list[str]] = {}
    for row in _rows("hate_patterns.txt"):
        if row[0].startswith("@"):  # macro definition, may use earlier macros
            macros[row[0][1:]] = "(?:" + _expand(row[1], macros) + ")"
            macro_words[row[0][1:]] = _key_words(row[1])
            continue
        weight, category, triggers, pattern = row
        regex = re.compile(_expand(pattern, macros), re.MULTILINE)
        rules.append(Rule(regex, float(weight), category, _parse_triggers(triggers, macro_words), "pattern"))
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
    return [m.group() for start, end in _windows(lowered, anchors) for m in rule.regex.finditer(lowered, start, end)]


@lru_cache(maxsize=8)  # line mode asks about the same document twice (line_scores, then offensive_score)
def match_details(text: str) -> tuple[tuple[tuple[str, float, str], ...], int]:
    """((matched text, weight, category), ... for every match in `text`; its word count)."""
    lex = _lexicon()
    lowered, tokens, _ = lower_words(text)
    present = set(tokens)
    found: list[tuple[str, float, str]] = []
    hits = present & lex.words.keys()
    # Words whose harmless sense the context selects ("the ass brayed") count neither alone nor in phrases.
    innocent = {w for w in hits if not lex.words[w].innocent.isdisjoint(present)}
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


# Characters of the obfuscation scan, as flags of ASCII code points (the others have none).
_LETTER, _SPECIAL, _HINT_SPECIAL, _BANG, _MAPPABLE = 1, 2, 4, 8, 16
_RUN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz@$!*0123456789")  # what an _OBFUSCATED token is made of


class _Prescreen(NamedTuple):
    """What `offensive_candidates` looks up. A unit is one way for match_details to find something: a
    lexicon word, or one trigger alternative of a rule; it needs a word of each of its groups present
    and none of its blocking words taken in their innocent sense."""

    index: WordIndex  # the vocabulary: lexicon, trigger and innocent-context words
    # Relations as CSR lists (row r's items are idx[ptr[r]:ptr[r + 1]]):
    groups: tuple[np.ndarray, np.ndarray]  # vocabulary word -> the groups it belongs to
    units: tuple[np.ndarray, np.ndarray]  # group -> the units that need it
    need: np.ndarray  # int64 per unit: how many groups it needs
    innocent_of: np.ndarray  # int64 per vocabulary word: its index among the innocent-sense words, or -1
    contexts: tuple[np.ndarray, np.ndarray]  # vocabulary word -> innocent-sense words it is a context of
    blocks: tuple[np.ndarray, np.ndarray]  # innocent-sense word -> units its innocent sense rules out
    rule_of: np.ndarray  # int64 per unit: its rule's index in _lexicon().rules, -1 for a lexicon word
    vocab: list[str]
    flags: np.ndarray  # uint8 per ASCII code point: _LETTER, _SPECIAL, ... for the obfuscation scan
    longest: int  # characters of the longest lexicon word or starred spelling


@lru_cache(maxsize=1)
def _prescreen() -> _Prescreen:
    lex = _lexicon()
    units: list[tuple[tuple[frozenset[str], ...], set[str]]] = []  # (groups, blocking words)
    rule_of: list[int] = []
    for word, entry in lex.words.items():
        units.append(((frozenset([word]),), {word} if entry.innocent else set()))
        rule_of.append(-1)
    for i, rule in enumerate(lex.rules):
        # A phrase is skipped when one of its words is taken in its innocent sense (see match_details).
        blocking = {w for group in rule.triggers[0] for w in group if w in lex.words and lex.words[w].innocent}
        units += [(alt, blocking if rule.kind == "phrase" else set()) for alt in rule.triggers]
        rule_of += [i] * len(rule.triggers)
    innocent = sorted(w for w, e in lex.words.items() if e.innocent)
    vocab = sorted({w for groups, _ in units for g in groups for w in g}
                   | {w for i in innocent for w in lex.words[i].innocent})
    at = {w: i for i, w in enumerate(vocab)}
    group_list = sorted({g for groups, _ in units for g in groups}, key=sorted)
    group_at = {g: i for i, g in enumerate(group_list)}
    word_groups = _csr(len(vocab), [(at[w], j) for j, g in enumerate(group_list) for w in g])
    group_units = _csr(len(group_list), [(group_at[g], u) for u, (gs, _) in enumerate(units) for g in gs])
    blocks = _csr(len(innocent), [(innocent.index(w), u) for u, (_, blocking) in enumerate(units) for w in blocking])
    contexts = _csr(len(vocab), [(at[c], j) for j, w in enumerate(innocent) for c in lex.words[w].innocent])
    innocent_of = np.full(len(vocab), -1, dtype=np.int64)
    innocent_of[[at[w] for w in innocent]] = np.arange(len(innocent))
    need = np.array([len(gs) for gs, _ in units], dtype=np.int64)
    # Specials that can stand in a token that maps to a lexicon word or starred spelling: '!' -> 'i', '*'.
    key_chars = set("".join(lex.words)) | set("".join(lex.masks))
    flags = np.zeros(128, dtype=np.uint8)
    for c in _RUN_CHARS:
        if c.isalpha():
            flags[ord(c)] = _LETTER
        else:
            flags[ord(c)] = _SPECIAL | (_BANG if c == "!" else _HINT_SPECIAL)
            if c in key_chars or c.translate(_LEET) in key_chars:
                flags[ord(c)] |= _MAPPABLE
    return _Prescreen(WordIndex(vocab), word_groups, group_units, need, innocent_of, contexts, blocks,
                      np.array(rule_of, dtype=np.int64), vocab, flags, max(map(len, [*lex.words, *lex.masks])))


def _csr(n_rows: int, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(ptr, idx) of the distinct (row, item) pairs: row r's items are idx[ptr[r]:ptr[r + 1]]."""
    rows = np.array(sorted(set(pairs)), dtype=np.int64).reshape(-1, 2)
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[:, 0], minlength=n_rows), out=ptr[1:])
    return ptr, rows[:, 1].copy()


def _follow(rows: np.ndarray, keys: np.ndarray, csr: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """For each (row, key) pair, (row, item) for every item csr lists under key."""
    ptr, idx = csr
    counts = ptr[keys + 1] - ptr[keys]
    ends = np.cumsum(counts)
    items = idx[np.repeat(ptr[keys] - ends + counts, counts) + np.arange(int(ends[-1]) if len(ends) else 0)]
    return np.repeat(rows, counts), items


def _maps_to_lexicon(lowered: str, at: int, pre: _Prescreen, lex: Lexicon) -> tuple[bool, int]:
    """(whether the run of _RUN_CHARS around `at` starts a token that _obfuscated_words would keep, its end).

    An _OBFUSCATED token starts where its run starts (the lookbehind excludes every run character) and
    ends at the run's end or before a '!'; this checks each such prefix, so it finds every token
    that _obfuscated_words keeps (and may accept one the regex would not have matched)."""
    start = at
    while start and lowered[start - 1] in _RUN_CHARS:
        start -= 1
    end = at + 1
    while end < len(lowered) and lowered[end] in _RUN_CHARS:
        end += 1
    stop = min(end, start + pre.longest)
    ends = [i for i in range(start + 2, stop) if lowered[i] == "!"] + ([end] if end == stop else [])
    for e in ends:
        token = lowered[start:e]
        if token.isalpha():
            continue  # an _OBFUSCATED token holds a special character
        plain = token.translate(_LEET)
        if plain in lex.words or plain in lex.masks or token in lex.masks:
            return True, end
    return False, end


def _obfuscation_candidates(words: WordArrays, pre: _Prescreen) -> np.ndarray:
    """bool per document: it has an _OBFUSCATION_HINT (match_details' gate) and a run of _RUN_CHARS
    that may hold a token mapping to the lexicon: one with a mappable special character next to a
    letter (a token that maps holds a letter and only such specials, so two of them are neighbours)."""
    out = np.zeros(words.n_docs, dtype=bool)
    f = np.take(pre.flags, words.codes, mode="clip")  # code points >= 128 read flags[127]: none
    at = np.flatnonzero(f & _SPECIAL)
    if len(at) == 0:
        return out
    me = f[at]
    left = f[at - 1] & _LETTER
    left[at == 0] = 0
    right = f[np.minimum(at + 1, len(f) - 1)] & _LETTER
    right[at == len(f) - 1] = 0
    near_letter = (left | right) != 0
    hint = ((me & _HINT_SPECIAL) != 0) & near_letter | ((me & _BANG) != 0) & (left != 0) & (right != 0)
    hint_docs = np.zeros(words.n_docs, dtype=bool)
    hint_docs[np.searchsorted(words.doc_first_char, at[hint], side="right") - 1] = True
    seeds = at[((me & _MAPPABLE) != 0) & near_letter]
    seed_docs = np.searchsorted(words.doc_first_char, seeds, side="right") - 1
    keep = hint_docs[seed_docs]
    lex = _lexicon()
    done_to = -1
    for pos, d in zip(seeds[keep].tolist(), seed_docs[keep].tolist()):
        if out[d] or pos < done_to:
            continue  # document decided, or the seed lies in the run just checked
        first = int(words.doc_first_char[d])
        found, end = _maps_to_lexicon(words.lower[d], pos - first, pre, lex)
        out[d] = found
        done_to = first + end
    return out


def offensive_candidates(words: WordArrays) -> np.ndarray:
    """bool per document of `words`: False only where `match_details` cannot find anything.

    A superset of the documents with a match, decided with array operations instead of per-document
    Python: a lexicon word (not in its innocent context), a phrase or pattern rule with one trigger
    alternative satisfied (a word of every group present, as match_details requires before it runs
    the regex), or an obfuscation hint together with a run of characters that may spell a lexicon
    word. The filter stage scores the candidates with `offensive_score` / `line_scores` and gives
    the rest 0.0 (a line list of zeros), with identical results.
    """
    pre = _prescreen()
    n = words.n_docs
    if n == 0 or len(words.hashes) == 0:
        return np.zeros(n, dtype=bool)
    at, hit = pre.index.lookup(words.hashes)
    n_vocab, n_units = len(pre.vocab), len(pre.need)
    pairs = np.unique(words.doc[hit] * n_vocab + at[hit])  # (document, vocabulary word) present, by document
    doc, word = pairs // n_vocab, pairs % n_vocab
    n_groups = len(pre.units[0]) - 1
    with_group = np.unique(_key(*_follow(doc, word, pre.groups), n_groups))  # (document, group) present
    unit_doc, unit = _follow(with_group // n_groups, with_group % n_groups, pre.units)
    fires = (np.bincount(unit_doc * n_units + unit, minlength=n * n_units).reshape(n, n_units) >= pre.need)
    # A word taken in its innocent sense (one of its context words present too) rules out its units.
    is_innocent = pre.innocent_of[word] >= 0
    n_innocent = len(pre.blocks[0]) - 1
    innocent = np.intersect1d(_key(doc[is_innocent], pre.innocent_of[word[is_innocent]], n_innocent),
                              _key(*_follow(doc, word, pre.contexts), n_innocent))
    fires[_follow(innocent // n_innocent, innocent % n_innocent, pre.blocks)] = False
    out = fires[:, pre.rule_of < 0].any(axis=1) | _obfuscation_candidates(words, pre)
    # Where only rules remain, run them as match_details would (their regexes near their anchor words):
    # common trigger words ("back", "have", "all") satisfy many triggers, the patterns far fewer texts.
    lex = _lexicon()
    rule_units = fires[:, pre.rule_of >= 0]
    unit_rules = pre.rule_of[pre.rule_of >= 0]
    starts = np.searchsorted(doc, np.arange(n + 1))
    for d in np.flatnonzero(~out & rule_units.any(axis=1)).tolist():
        present_words = {pre.vocab[i] for i in word[starts[d] : starts[d + 1]].tolist()}
        for r in sorted(set(unit_rules[rule_units[d]].tolist())):
            if _rule_matches(lex.rules[r], words.lower[d], present_words):
                out[d] = True
                break
    return out


def _key(rows: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    return rows * n_items + items


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


def line_scores(text: str) -> list[float]:
    """offensive_score of each line of text.split('\\n'); texts without any match skip the per-line pass."""
    lines = text.split("\n")
    if len(lines) == 1:
        return [offensive_score(text)]
    if not match_details(text)[0]:
        return [0.0] * len(lines)
    # On a long text (a web page has hundreds of lines) only the lines that could match are scored one
    # by one; below ~16 lines the prescreen's fixed cost is more than it saves.
    maybe = offensive_candidates(WordArrays.from_texts(lines)).tolist() if len(lines) > 16 else [True] * len(lines)
    return [offensive_score(line) if hit and line.strip() else 0.0 for line, hit in zip(lines, maybe)]
