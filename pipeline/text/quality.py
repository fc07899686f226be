"""Document quality rules for the filter stage: Gopher-style word and repetition rules, C4/FineWeb line rules.

`quality_reasons(texts, words, cfg)` returns, for each text of a batch, the name of the first failing rule,
or None to keep it; `words = WordArrays.from_texts(texts)` is built once by the caller and shared with the
other filter rules. `quality_reason(text, cfg)` is the same for one text.
Rules, in the order they are checked (thresholds and their provenance live in `QualityConfig`):

    too_few_words, too_many_words   word count (CJK ideographs, kana and hangul count one word each)
    short_words, long_words         mean length of letter-bearing words (skipped for CJK-dominant text)
    symbols                         '#' and ellipses per word
    non_alpha                       share of words with a letter; punctuation-only tokens are not words
    no_stopwords                    Latin-script text without any function word (keyboard mash, word salad)
    repeated_lines                  share of lines that repeat an earlier line (poetry allows refrains)
    repeated_ngrams                 share of word characters inside the most frequent word 2-gram
    lines_no_terminal_punct, bullet_lines, lines_ellipsis, short_lines,     profile 'web' only
    short_mean_line, short_page

Unlike word-tokenizer based implementations, a token such as "—" or "..." is never a word here,
so punctuation-rich dialogue and verse are not mistaken for non-alphabetic junk.

Every rule runs over the whole batch as numpy array arithmetic (and compiled passes over the
characters, `_char_stats`) on the shared `WordArrays`: no Python code runs per word, and per document
only C-level string methods (`str.count`, `str.split`)
plus a little Python for the few documents a cheap vectorized bound cannot clear (2-gram counts).
A text without any word (possible only with `min_words=0`) fails 'symbols' if it holds '#' or an
ellipsis and is not 'non_alpha'.
"""

from __future__ import annotations

import re
from itertools import chain, repeat
from operator import itemgetter

import numpy as np
import pyarrow as pa
from numba import njit

from pipeline.config import QualityConfig
from pipeline.text.langid import FUNCTION_WORDS
from pipeline.text.wordarrays import (
    CJK,
    CJK_CHARS,
    DIGIT,
    LETTER,
    SPACE,
    WORD,
    WordArrays,
    code_points,
    hash_words,
    positions,
    unique,
)

# Elision stubs ("l'", "qu'") are function words only before an apostrophe: a lone "l" is not one.
_STOPWORDS = frozenset(w for words in FUNCTION_WORDS.values() for w in words if len(w) > 1 or w in "aiyoeà")
_STOP_HASHES = hash_words(sorted(_STOPWORDS))
_FEW_WORDS = 50  # below this a single function word is enough (short poems are terse)

_TERMINAL = (".", "!", "?", '"', "'", "”", "’", ")", "…", ":", ";", "»", "」", "』", "。", "！", "？")
_BULLETS = ("•", "-", "*", "·", "‣", "▪", "●", "◦", "–", "—", "➤", "►", "✓", "✔", "→", "○", "■", "□")
_ELLIPSES = ("...", "…")
# Every terminal and bullet is one character: lines are tested on their last / first code point.
assert all(len(t) == 1 for t in _TERMINAL + _BULLETS)
_TERMINAL_CODES = np.array(sorted(map(ord, _TERMINAL)), dtype=np.uint32)
_BULLET_CODES = np.array(sorted(map(ord, _BULLETS)), dtype=np.uint32)

# Reason codes: 0 keeps the text, k > 0 is _NAMES[k]; codes grow in rule order.
_NAMES = (None, "too_few_words", "too_many_words", "short_words", "long_words", "symbols", "non_alpha",
          "no_stopwords", "repeated_lines", "repeated_ngrams", "lines_no_terminal_punct", "bullet_lines",
          "lines_ellipsis", "short_lines", "short_mean_line", "short_page")
_CODE = {name: code for code, name in enumerate(_NAMES)}
_BUCKETS = 256  # hash buckets per document for the 2-gram bound


def _seg_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of `values` over each segment [offsets[i], offsets[i + 1]) (empty segments give 0)."""
    total = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(values, out=total[1:])
    return total[offsets[1:]] - total[offsets[:-1]]


@njit(cache=True, nogil=True)
def _token_stats(classes, doc_first_char):
    """Per document, in one compiled pass over its character classes: (words, letter-bearing words, CJK
    characters, ASCII digits). A word is a whitespace token holding a letter or digit, and each CJK character
    is one word (CJK characters separate tokens, as if they were spaces); a letter-bearing word holds a letter."""
    n_docs = len(doc_first_char) - 1
    out = np.zeros((4, n_docs), np.int64)
    for d in range(n_docs):
        words = alpha = cjk = digits = 0
        has_word = has_letter = 0
        for i in range(doc_first_char[d], min(doc_first_char[d + 1], len(classes))):  # the last has no separator
            c = classes[i]
            is_cjk = np.int64((c & CJK) != 0)
            apart = is_cjk | np.int64((c & SPACE) != 0)  # the token ends
            words += has_word & apart
            alpha += has_letter & apart
            has_word = (has_word | np.int64((c & WORD) != 0)) & (1 - apart)
            has_letter = (has_letter | np.int64((c & LETTER) != 0)) & (1 - apart)
            cjk += is_cjk
            digits += (c & DIGIT) != 0
        out[0, d] = words + has_word + cjk
        out[1, d] = alpha + has_letter + cjk
        out[2, d], out[3, d] = cjk, digits
    return out


_SYMBOL_CHARS = np.zeros(0x2028, dtype=np.uint8)  # '.', '#', '…'; code points past the end read 0
_SYMBOL_CHARS[[ord("."), ord("#"), ord("…")]] = 1


@njit(cache=True, nogil=True)
def _symbol_counts(codes, doc_first_char, at):
    """Per document: text.count("#") + text.count("...") + text.count("…"), from the sorted positions `at` of
    those characters in `codes` (a run of k dots holds k // 3 ellipses; documents are apart, so runs are too)."""
    out = np.zeros(len(doc_first_char) - 1, np.int64)
    d, k = 0, 0
    while k < len(at):
        p = at[k]
        while doc_first_char[d + 1] <= p:
            d += 1
        run = 1
        if codes[p] == 46:
            while k + run < len(at) and at[k + run] == p + run and codes[p + run] == 46:
                run += 1
            out[d] += run // 3
        else:
            out[d] += 1
        k += run
    return out


def _char_stats(classes: np.ndarray, codes: np.ndarray, doc_first_char: np.ndarray) -> np.ndarray:
    """(5, n_docs): words, letter-bearing words, CJK characters, ASCII digits (`_token_stats`) and symbols
    (`_symbol_counts`) per document. Two passes: the token pass runs branch-free, and the symbols are rare."""
    at = positions(codes, _SYMBOL_CHARS, 1)
    return np.vstack([_token_stats(classes, doc_first_char), _symbol_counts(codes, doc_first_char, at)[None]])


def count_words_batch(words: WordArrays) -> np.ndarray:
    """Per document: whitespace tokens holding a letter or digit, plus one per CJK ideograph/kana/hangul syllable."""
    return _token_stats(words.classes, words.doc_first_char)[0]


def count_words(text: str) -> int:
    """Whitespace tokens holding a letter or digit, plus one per CJK ideograph/kana/hangul syllable."""
    return int(count_words_batch(WordArrays.from_texts([text]))[0])


def _perfect_table(hashes: np.ndarray) -> tuple[np.ndarray, np.uint64, np.uint64] | None:
    """(table, shift, mask) with table[(h >> shift) & mask] == h exactly for the given hashes: a word is one
    of them iff its slot holds its hash (empty slots hold hashes[0], whose own slot is another one, so
    they never match). Four array passes per lookup instead of a binary search. None if no such slots exist."""
    if len(hashes) == 0:
        return None
    for bits in range(max(8, (64 * len(hashes)).bit_length()), 23):
        mask = np.uint64((1 << bits) - 1)
        for shift in map(np.uint64, range(65 - bits)):
            slots = (hashes >> shift) & mask
            if len(unique(slots)) == len(hashes):
                table = np.full(1 << bits, hashes[0], dtype=np.uint64)
                table[slots] = hashes
                return table, shift, mask
    return None


_STOP_TABLE = _perfect_table(_STOP_HASHES)


def _is_stopword(hashes: np.ndarray) -> np.ndarray:
    if _STOP_TABLE is None:
        return np.isin(hashes, _STOP_HASHES)
    table, shift, mask = _STOP_TABLE
    return np.take(table, (hashes >> shift) & mask) == hashes


def _dup_line_ratio(lines: list[str]) -> float:
    return 1 - len(set(lines)) / len(lines) if len(lines) > 1 else 0.0


def _top_bigram_ratio(hashes: np.ndarray, lengths: np.ndarray, limit: float) -> float:
    """Gopher's top-n-gram rule for n=2 on one document's word hashes: share of word characters inside
    the most frequent 2-gram (the first to occur among equally frequent ones).

    A 2-gram (a, b) occurring c times has c <= count(a) and c <= count(b), so its share is at most
    share(a) + share(b): unless some single word covers more than limit/2 of the characters, no
    2-gram can exceed `limit` and the 2-gram count is skipped.
    """
    total = int(lengths.sum())
    _, first, counts = np.unique(hashes, return_index=True, return_counts=True)
    if int((counts * lengths[first]).max()) <= limit / 2 * total:
        return 0.0
    with np.errstate(over="ignore"):  # one 64-bit key per 2-gram: hash(a) * odd + hash(b)
        pairs = hashes[:-1] * np.uint64(0x9E3779B97F4A7C15) + hashes[1:]
    _, first, counts = np.unique(pairs, return_index=True, return_counts=True)
    best = int(counts.max())
    at = int(first[counts == best].min())
    return best * (int(lengths[at]) + int(lengths[at + 1])) / total


def _repeated_line_candidates(words: WordArrays, start: np.ndarray, docs: np.ndarray, max_dup: float) -> np.ndarray:
    """The `docs` whose share of repeated lines might exceed `max_dup`, from an upper bound on that share.

    Equal stripped lines hold equal word sequences, so equal sums of their word hashes: distinct sums
    among a document's lines with words are at most its distinct lines. A line without words is empty
    (length 0) or, if not, might be a non-empty line (punctuation) that is distinct from every line with
    words; all such lines together repeat at most one of them. `start`: each word's place in `codes`.
    """
    if len(docs) == 0:
        return docs
    first_char = words.doc_first_char
    cuts = np.concatenate((np.flatnonzero(words.codes == 10), first_char[1:] - 1))  # "\n" and separators
    cuts.sort()
    line_start = np.empty(len(cuts), dtype=np.int64)
    line_start[0] = 0
    line_start[1:] = cuts[:-1] + 1
    line_doc = np.searchsorted(first_char, line_start, side="right") - 1
    first_word = np.searchsorted(start, line_start)
    n_line_words = np.diff(first_word, append=len(start))
    with_words = np.flatnonzero(n_line_words)
    blank_or_not = np.bincount(line_doc[(n_line_words == 0) & (cuts > line_start)], minlength=words.n_docs)
    n_lines = np.bincount(line_doc[with_words], minlength=words.n_docs)
    bits = max(1, (words.n_docs - 1).bit_length())
    with np.errstate(over="ignore"):
        key = np.add.reduceat(words.hashes, first_word[with_words]) if len(with_words) else np.zeros(0, np.uint64)
    key = (key >> np.uint64(bits)) | (line_doc[with_words].astype(np.uint64) << np.uint64(64 - bits))
    key.sort()
    distinct = np.ones(len(key), dtype=bool)
    distinct[1:] = key[1:] != key[:-1]
    n_distinct = np.bincount((key[distinct] >> np.uint64(64 - bits)).astype(np.int64), minlength=words.n_docs)
    repeats = (n_lines - n_distinct)[docs]
    n_lines, blank_or_not = n_lines[docs], blank_or_not[docs]
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.fmax(repeats / n_lines, (repeats + blank_or_not - 1) / (n_lines + blank_or_not))
    return docs[(bound > max_dup - 1e-9) & (n_lines + blank_or_not > 1)]


def _bigram_candidates(words: WordArrays, docs: np.ndarray, totals: np.ndarray, limit: float) -> np.ndarray:
    """The `docs` where some word might cover more than limit/2 of the word characters (see
    `_top_bigram_ratio`). First each document's words go into hash buckets (a word covers at most its
    bucket's characters); the documents left get the characters of each distinct word summed."""
    if len(docs) == 0:
        return docs
    threshold = limit / 2 * totals
    # Buckets: with most documents in question, every word of the batch is bucketed (no gathering).
    if 2 * len(docs) >= words.n_docs:
        doc, hashes, lengths, rows = words.doc, words.hashes, words.lengths, words.n_docs
    else:
        pick = np.zeros(words.n_docs, dtype=bool)
        pick[docs] = True
        chosen = np.flatnonzero(pick[words.doc])
        rank = np.zeros(words.n_docs, dtype=np.int64)
        rank[docs] = np.arange(len(docs))
        doc, hashes, lengths, rows = rank[words.doc[chosen]], words.hashes[chosen], words.lengths[chosen], len(docs)
    fill = np.bincount(doc * _BUCKETS + (hashes & np.uint64(_BUCKETS - 1)).astype(np.int64), weights=lengths,
                       minlength=rows * _BUCKETS).reshape(rows, _BUCKETS).max(axis=1)
    docs = docs[fill[docs if rows == words.n_docs else np.arange(len(docs))] > threshold[docs]]
    if len(docs) == 0:
        return docs
    # Exact: one key per (document, word); keys that collide only overstate the cover.
    pick = np.zeros(words.n_docs, dtype=bool)
    pick[docs] = True
    chosen = np.flatnonzero(pick[words.doc])
    bits = max(1, (words.n_docs - 1).bit_length())
    keys = (words.hashes[chosen] >> np.uint64(bits)) | (words.doc[chosen].astype(np.uint64) << np.uint64(64 - bits))
    distinct, inverse = np.unique(keys, return_inverse=True)
    cover = np.bincount(inverse.ravel(), weights=words.lengths[chosen])
    top = np.zeros(words.n_docs)
    np.maximum.at(top, (distinct >> np.uint64(64 - bits)).astype(np.int64), cover)
    return docs[top[docs] > threshold[docs]]


def _line_rules(texts: list[str], docs: np.ndarray, cfg: QualityConfig,
                max_dup: float) -> tuple[np.ndarray, np.ndarray]:
    """For `docs`: (repeats too many lines, code of the failing 'web' line rule or 0).

    A line is a stripped non-empty line of `text.split("\\n")`. The lines of all documents are handled
    as one flat list by C-level `map` calls; only a document whose lines' `hash()` values repeat too
    often has its lines compared exactly, as a set.
    """
    raw = list(map(str.split, map(texts.__getitem__, docs.tolist()), repeat("\n")))
    lines = list(map(str.strip, chain.from_iterable(raw)))
    length = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
    doc = np.repeat(np.arange(len(docs)), np.fromiter(map(len, raw), dtype=np.int64, count=len(raw)))
    kept = length > 0
    n = np.bincount(doc[kept], minlength=len(docs))

    hashes = np.fromiter(map(hash, lines), dtype=np.int64, count=len(lines))[kept].view(np.uint64)
    bits = max(1, (len(docs) - 1).bit_length())
    keys = (hashes >> np.uint64(bits)) | (doc[kept].astype(np.uint64) << np.uint64(64 - bits))
    keys.sort()
    distinct = np.ones(len(keys), dtype=bool)
    distinct[1:] = keys[1:] != keys[:-1]
    n_distinct = np.bincount((keys[distinct] >> np.uint64(64 - bits)).astype(np.int64), minlength=len(docs))
    with np.errstate(divide="ignore", invalid="ignore"):
        repeated = (n > 1) & (1 - n_distinct / n > max_dup)  # equal hashes for unequal lines only overstate
    firsts = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, raw), dtype=np.int64, count=len(raw)), out=firsts[1:])
    for k in np.flatnonzero(repeated).tolist():
        repeated[k] = _dup_line_ratio(list(filter(None, lines[firsts[k] : firsts[k + 1]]))) > max_dup

    code = np.zeros(len(docs), dtype=np.int8)
    if cfg.profile != "web":
        return repeated, code
    # The last three and the first character of each non-empty line, as code points.
    nonempty = list(filter(None, lines))
    tails = "".join(map(str.rjust, map(itemgetter(slice(-3, None)), nonempty), repeat(3)))
    tail = code_points(tails).reshape(-1, 3)
    head = code_points("".join(map(itemgetter(0), nonempty)))
    line_doc = doc[kept]
    with np.errstate(divide="ignore", invalid="ignore"):
        rules = (
            ("lines_no_terminal_punct", lambda: ~np.isin(tail[:, 2], _TERMINAL_CODES), cfg.max_no_terminal_punct_ratio),
            ("bullet_lines", lambda: np.isin(head, _BULLET_CODES), cfg.max_bullet_line_ratio),
            # ends with one of _ELLIPSES
            ("lines_ellipsis", lambda: (tail[:, 2] == ord("…")) | (tail == ord(".")).all(axis=1),
             cfg.max_ellipsis_line_ratio),
            ("short_lines", lambda: length[kept] < cfg.short_line_chars, cfg.max_short_line_ratio),
        )
        for name, flags, limit in rules:
            share = np.bincount(line_doc[flags()], minlength=len(docs)) / n
            code[(code == 0) & (n > 0) & (share > limit)] = _CODE[name]
        mean_chars = np.bincount(line_doc, weights=length[kept], minlength=len(docs)) / n
        code[(code == 0) & (n > 0) & (mean_chars < cfg.min_mean_line_chars)] = _CODE["short_mean_line"]
    return repeated, code


def quality_reasons(texts: list[str], words: WordArrays, cfg: QualityConfig) -> list[str | None]:
    """For each text, the name of its first failing quality rule, or None when it passes them all.

    `words` must be `WordArrays.from_texts(texts)`.
    """
    if len(texts) != words.n_docs:
        raise ValueError(f"{len(texts)} texts but words of {words.n_docs} documents")
    if not texts:
        return []
    n_words, n_alpha, n_cjk, digits, symbols = _char_stats(words.classes, words.codes, words.doc_first_char)
    start = words.first_char
    reason = np.zeros(len(texts), dtype=np.int8)

    def fail(mask: np.ndarray, name: str) -> None:
        reason[mask & (reason == 0)] = _CODE[name]

    fail(n_words < cfg.min_words, "too_few_words")
    fail(n_words > cfg.max_words, "too_many_words")

    n_runs = words.per_doc()  # letter/digit runs, each CJK character separate
    chars = _seg_sum(words.lengths, words.offsets)
    cjk_dominant = n_cjk > n_alpha - n_cjk
    lettered = n_alpha - n_cjk
    with np.errstate(divide="ignore", invalid="ignore"):
        # Letters per letter-bearing word: punctuation, apostrophes and digits do not count.
        mean_len = (chars - digits - n_cjk) / lettered
        measured = (n_alpha > n_cjk) & ~cjk_dominant  # a CJK "word" is one character: mean length means nothing
        fail(measured & (mean_len < cfg.min_mean_word_len), "short_words")
        fail(measured & (mean_len > cfg.max_mean_word_len), "long_words")
        fail(symbols / n_words > cfg.max_symbol_ratio, "symbols")
        fail(n_alpha / n_words < cfg.min_alpha_word_ratio, "non_alpha")

    # Latin-script text with fewer function words than a real sentence in any of our languages has.
    needed = np.where(n_words < _FEW_WORDS, min(cfg.min_stopwords, 1), cfg.min_stopwords)
    unsure = np.flatnonzero((reason == 0) & ~cjk_dominant & (needed > 0))
    if len(unsure):
        hits = _seg_sum(_is_stopword(words.hashes), words.offsets)
        for i in unsure[hits[unsure] < needed[unsure]]:  # other scripts have no function-word lists here
            if np.count_nonzero(words.latin[words.words_of(i)]) >= 0.5 * n_runs[i]:
                reason[i] = _CODE["no_stopwords"]

    # Line rules: only the documents still kept are split into lines; outside 'web' only those whose
    # words do not rule out too many repeated lines.
    max_dup = cfg.max_dup_line_ratio_poetry if cfg.profile == "poetry" else cfg.max_dup_line_ratio
    kept = np.flatnonzero(reason == 0)
    if cfg.profile != "web":
        kept = _repeated_line_candidates(words, start, kept, max_dup)
    web_code = np.zeros(len(texts), dtype=np.int8)
    if len(kept):
        repeated, web_code[kept] = _line_rules(texts, kept, cfg, max_dup)
        reason[kept[repeated]] = _CODE["repeated_lines"]

    limit = cfg.max_top_ngram_ratio
    eligible = np.flatnonzero((reason == 0) & (n_runs >= max(2, cfg.ngram_min_words)))
    for i in _bigram_candidates(words, eligible, chars, limit).tolist():
        span = words.words_of(i)
        if _top_bigram_ratio(words.hashes[span], words.lengths[span], limit) > limit:
            reason[i] = _CODE["repeated_ngrams"]

    reason[reason == 0] = web_code[reason == 0]
    if cfg.profile == "web":
        fail(n_words < cfg.min_words_web, "short_page")
    return [_NAMES[code] for code in reason.tolist()]


def quality_reason(text: str, cfg: QualityConfig) -> str | None:
    """Name of the first failing quality rule, or None when the text passes them all."""
    return quality_reasons([text], WordArrays.from_texts([text]), cfg)[0]


_CJK_CHAR = re.compile(f"[{CJK_CHARS}]")


def word_counts(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Words per text of a string column, for the length histogram: whitespace tokens counted on the
    column's UTF-8 buffer in place (no Python string per document); CJK-aware `count_words` for the
    few texts holding CJK."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    counts, maybe_cjk = _whitespace_words(data, offsets)
    for i in np.flatnonzero(maybe_cjk).tolist():
        text = arr[i].as_py()
        if _CJK_CHAR.search(text):
            counts[i] = count_words(text)
    return counts


@njit(cache=True, nogil=True)
def _whitespace_words(data, offsets):
    """(whitespace tokens per text, whether it may hold CJK) of UTF-8 texts data[offsets[i]:offsets[i + 1]].
    Whitespace is the ASCII of str.split(): \t \n \x0b \x0c \r, \x1c-\x1f and the space. CJK characters are
    3-byte sequences led by 0xE3-0xED or 0xEF: only those texts need count_words. Unsigned arithmetic
    without a lookup table or branches: a quarter faster than a table (on book paragraphs)."""
    n = len(offsets) - 1
    counts, maybe_cjk = np.zeros(n, np.int64), np.zeros(n, np.bool_)
    one = np.uint32(1)
    for i in range(n):
        words, lead, after_space = np.uint32(0), np.uint32(0), one  # a word starts after a space or at the start
        for j in range(offsets[i], offsets[i + 1]):
            b = np.uint32(data[j])
            space = np.uint32((b == 32) | (b - np.uint32(9) <= np.uint32(4)) | (b - np.uint32(28) <= np.uint32(3)))
            words += after_space & (space ^ one)
            after_space = space
            lead |= np.uint32((b - np.uint32(0xE3) <= np.uint32(12)) & (b != np.uint32(0xEE)))
        counts[i], maybe_cjk[i] = words, lead != 0
    return counts, maybe_cjk
