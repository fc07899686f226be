"""Which documents of a batch the offensive-content scorer could find anything in (filter stage).

    offensive_candidates(words) -> bool per document of a WordArrays batch

A strict superset of the documents where `score.match_details` finds a match, decided without
Python per word: word hashes against the lexicon and the rules' trigger words (sparse relations
followed per document in a compiled loop, `_fire`), the innocent senses, a scan of the code points
for obfuscated spellings, and, only for documents that
rules alone make candidates, the rules' regexes near their anchors. The filter stage scores the
candidates with `offensive_score` / `line_scores` and gives every other document 0.0, with results
identical to scoring them all (tested on the labelled sets, the sample corpus and random texts).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numba import njit

from pipeline.text.offensive.lexicon import LEET, load_lexicon, rule_matches
from pipeline.text.wordarrays import WordArrays, WordIndex, positions

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
    rule_of: np.ndarray  # int64 per unit: its rule's index in load_lexicon().rules, -1 for a lexicon word
    vocab: list[str]
    flags: np.ndarray  # uint8 per ASCII code point: _LETTER, _SPECIAL, ... for the obfuscation scan
    longest: int  # characters of the longest lexicon word or starred spelling


@lru_cache(maxsize=1)
def _prescreen() -> _Prescreen:
    lex = load_lexicon()
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
            if c in key_chars or c.translate(LEET) in key_chars:
                flags[ord(c)] |= _MAPPABLE
    return _Prescreen(WordIndex(vocab), word_groups, group_units, need, innocent_of, contexts, blocks,
                      np.array(rule_of, dtype=np.int64), vocab, flags, max(map(len, [*lex.words, *lex.masks])))


def _csr(n_rows: int, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(ptr, idx) of the distinct (row, item) pairs: row r's items are idx[ptr[r]:ptr[r + 1]]."""
    rows = np.array(sorted(set(pairs)), dtype=np.int64).reshape(-1, 2)
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[:, 0], minlength=n_rows), out=ptr[1:])
    return ptr, rows[:, 1].copy()


@lru_cache(maxsize=1 << 14)  # runs such as "1st", "mp3" or "24h" recur across a corpus
def _run_maps(run: str) -> bool:
    """Whether a run of _RUN_CHARS starts a token that _obfuscated_words would keep.

    An _OBFUSCATED token starts where its run starts (the lookbehind excludes every run character) and
    ends at the run's end or before a '!'; this checks each such prefix, so it finds every token
    that _obfuscated_words keeps (and may accept one the regex would not have matched)."""
    lex, longest = load_lexicon(), _prescreen().longest
    # A token that can map is at most `longest` characters: it ends at a '!' or at the run's end.
    ends = [i for i in range(2, min(len(run), longest + 1)) if run[i] == "!"]
    ends += [len(run)] if len(run) <= longest else []
    for e in ends:
        token = run[:e]
        if token.isalpha():
            continue  # an _OBFUSCATED token holds a special character
        plain = token.translate(LEET)
        if plain in lex.words or plain in lex.masks or token in lex.masks:
            return True
    return False


@njit(cache=True, nogil=True)
def _runs(codes, flags, seeds):
    """(start, end) of the run of _RUN_CHARS (flags _LETTER or _SPECIAL) around each seed position."""
    starts, ends = np.empty(len(seeds), np.int64), np.empty(len(seeds), np.int64)
    for k in range(len(seeds)):
        start, end = seeds[k], seeds[k] + 1
        while start > 0 and codes[start - 1] < 128 and flags[codes[start - 1]] & (_LETTER | _SPECIAL):
            start -= 1
        while end < len(codes) and codes[end] < 128 and flags[codes[end]] & (_LETTER | _SPECIAL):
            end += 1
        starts[k], ends[k] = start, end
    return starts, ends


def _obfuscation_candidates(words: WordArrays, pre: _Prescreen) -> np.ndarray:
    """bool per document: it has an _OBFUSCATION_HINT (match_details' gate) and a run of _RUN_CHARS
    that may hold a token mapping to the lexicon: one with a mappable special character next to a
    letter (a token that maps holds a letter and only such specials, so two of them are neighbours)."""
    out = np.zeros(words.n_docs, dtype=bool)
    codes = words.codes
    at = positions(codes, pre.flags, _SPECIAL)  # code points >= 128 read flags[127]: none
    if len(at) == 0:
        return out
    flag = lambda where: np.take(pre.flags, codes[where], mode="clip")  # noqa: E731
    me = flag(at)
    left = flag(at - 1) & _LETTER
    left[at == 0] = 0
    right = flag(np.minimum(at + 1, len(codes) - 1)) & _LETTER
    right[at == len(codes) - 1] = 0
    near_letter = (left | right) != 0
    hint = ((me & _HINT_SPECIAL) != 0) & near_letter | ((me & _BANG) != 0) & (left != 0) & (right != 0)
    hint_docs = np.zeros(words.n_docs, dtype=bool)
    hint_docs[np.searchsorted(words.doc_first_char, at[hint], side="right") - 1] = True
    seeds = at[((me & _MAPPABLE) != 0) & near_letter]
    seeds = seeds[hint_docs[np.searchsorted(words.doc_first_char, seeds, side="right") - 1]]
    starts, ends = _runs(codes, pre.flags, seeds)
    distinct = np.flatnonzero(np.diff(starts, prepend=-1))  # seeds are sorted: one run holds consecutive ones
    docs = np.searchsorted(words.doc_first_char, starts[distinct], side="right") - 1
    for start, end, d in zip(starts[distinct].tolist(), ends[distinct].tolist(), docs.tolist()):
        if not out[d] and _run_maps(codes[start:end].tobytes().decode("utf-32-le")):
            out[d] = True
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
    fires, doc, word = _fire(at, hit, words.offsets, *pre.groups, *pre.units, pre.need, pre.innocent_of, *pre.contexts,
                             *pre.blocks)
    out = fires[:, pre.rule_of < 0].any(axis=1) | _obfuscation_candidates(words, pre)
    # Where only rules remain, run them as match_details would (their regexes near their anchor words):
    # common trigger words ("back", "have", "all") satisfy many triggers, the patterns far fewer texts.
    lex = load_lexicon()
    rule_units = fires[:, pre.rule_of >= 0]
    unit_rules = pre.rule_of[pre.rule_of >= 0]
    starts = np.searchsorted(doc, np.arange(n + 1))
    for d in np.flatnonzero(~out & rule_units.any(axis=1)).tolist():
        present_words = {pre.vocab[i] for i in word[starts[d] : starts[d + 1]].tolist()}
        for r in sorted(set(unit_rules[rule_units[d]].tolist())):
            if rule_matches(lex.rules[r], words.lower[d], present_words):
                out[d] = True
                break
    return out


@njit(cache=True, nogil=True)
def _fire(word_at, word_found, offsets, group_ptr, group_idx, unit_ptr, unit_idx, need, innocent_of, context_ptr,
          context_idx, block_ptr, block_idx):
    """(fires: bool (n_docs, n_units), then the (document, vocabulary word) pairs present, sorted) for the
    relations of `_Prescreen`, one document at a time in a compiled loop: a unit fires when a word of each
    of its groups is present, unless a present word it is blocked by has one of its context words present."""
    n_docs, n_units = len(offsets) - 1, len(need)
    fires = np.zeros((n_docs, n_units), np.bool_)
    n_found = 0
    for w in range(len(word_found)):
        n_found += word_found[w]
    pair_doc, pair_word = np.empty(n_found, np.int64), np.empty(n_found, np.int64)
    word_seen = np.full(len(group_ptr) - 1, -1, np.int64)  # the last document each was seen in
    group_seen = np.full(len(unit_ptr) - 1, -1, np.int64)
    context_seen = np.full(len(block_ptr) - 1, -1, np.int64)
    groups_met, touched = np.zeros(n_units, np.int64), np.empty(n_units, np.int64)
    n_pairs = 0
    for d in range(n_docs):
        first = n_pairs
        for w in range(offsets[d], offsets[d + 1]):
            v = np.int64(word_at[w])
            if word_found[w] and word_seen[v] != d:
                word_seen[v] = d
                pair_doc[n_pairs], pair_word[n_pairs] = d, v
                n_pairs += 1
        pair_word[first:n_pairs].sort()
        n_touched = 0
        for k in range(first, n_pairs):
            v = pair_word[k]
            for g in group_idx[group_ptr[v] : group_ptr[v + 1]]:
                if group_seen[g] != d:
                    group_seen[g] = d
                    for u in unit_idx[unit_ptr[g] : unit_ptr[g + 1]]:
                        if groups_met[u] == 0:
                            touched[n_touched] = u
                            n_touched += 1
                        groups_met[u] += 1
            for i in context_idx[context_ptr[v] : context_ptr[v + 1]]:
                context_seen[i] = d
        for k in range(n_touched):
            u = touched[k]
            fires[d, u] = groups_met[u] >= need[u]
            groups_met[u] = 0
        for k in range(first, n_pairs):  # a word taken in its innocent sense rules out the units it blocks
            i = innocent_of[pair_word[k]]
            if i >= 0 and context_seen[i] == d:
                for u in block_idx[block_ptr[i] : block_ptr[i + 1]]:
                    fires[d, u] = False
    return fires, pair_doc[:n_pairs], pair_word[:n_pairs]
