"""Words of a whole batch of documents as numpy arrays: one tokenization shared by the filter rules.

    words = WordArrays.from_texts(texts)
    words.hashes[words.offsets[i]:words.offsets[i + 1]]   # 64-bit hashes of document i's words, in order
    words.per_doc(words.isin(hash_words(["the", "and"])))  # function words per document

A word is what `lower_words` (the per-text form, at the end of this module) yields: a maximal run of
letters/digits of the lower-cased
text (Python's `[^\\W_]`), each CJK ideograph, kana or hangul syllable a word of its own. Here the
words are never Python strings: the batch is encoded once as UTF-32 code points, a 1.1 MB table
gives every code point its character classes, and one compiled pass (numba) over the classes cuts
the words and gives each a 64-bit polynomial hash of its code points (mixed with splitmix64). Every
per-word and per-document figure is then array arithmetic, so the cost per document is a few numpy
element operations instead of Python calls: on this machine tokenizing a batch this way runs ~3x
faster than `re.findall` alone, and the rules on top cost little more.

Hashes are deterministic (fixed constants, no salted `hash()`), equal for equal words in any
batch, and `hash_words` gives the same hash for a word spelled as a string. Two different words
share a hash with probability ~2**-64 (not adversarially: do not use for security).
"""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from typing import NamedTuple

import numpy as np
from numba import njit

# CJK ideographs, kana and hangul syllables: each one is a word of its own.
CJK_CHARS = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"

# Character classes (bit flags) per code point.
WORD = 1  # [^\W_]: a letter or digit (str.isalnum)
CJK = 2  # a word by itself
SPACE = 4  # \s, the same as str.isspace: separates whitespace tokens
ALPHA = 8  # str.isalpha
LETTER = 16  # [^\W\d_]: a letter (\w but not a decimal digit or '_')
LATIN = 32  # [a-z\xdf-\xf6\xf8-\u024f]: a lower-case Latin letter
DIGIT = 64  # 0-9
DECIMAL = 128  # \d: any Unicode decimal digit (what re's \d matches in str patterns)

_P = np.uint64(0x100000001B3)  # odd multiplier of the polynomial hash (the FNV prime)
_LENGTH_MIX = np.uint64(0x9E3779B97F4A7C15)
_MAX_UNICODE = 0x110000
_SEP = "\x00"  # joins the documents of a batch: no class, so no word crosses a document boundary


_CLASSED_BELOW = 0x40000  # planes 0-3: no character above has a class (char_classes checks it)


@lru_cache(maxsize=1)
def char_classes() -> np.ndarray:
    """uint8 class flags for every code point, built once per process (~0.3 s) from the same regexes
    the per-text functions use, so the two can never disagree."""
    table = np.zeros(_MAX_UNICODE, dtype=np.uint8)
    patterns = ((WORD, r"[^\W_]+"), (CJK, f"[{CJK_CHARS}]+"), (SPACE, r"\s+"), (LETTER, r"[^\W\d_]+"),
                (LATIN, "[a-z\xdf-\xf6\xf8-\u024f]+"), (DIGIT, "[0-9]+"), (DECIMAL, r"\d+"))
    # Unassigned planes 4-13, tags and private use have no class: one search over them proves it (every
    # class, ALPHA too, lies inside \w, \s or CJK_CHARS), so only the planes below are classified one by one.
    rest = "".join(map(chr, range(_CLASSED_BELOW, _MAX_UNICODE)))
    assert not re.search(f"[\\w\\s{CJK_CHARS}]", rest), "a character above U+3FFFF has a class"
    # Surrogates cannot be joined into one str with the rest safely; they carry no class anyway.
    chars = "".join(map(chr, range(0xD800))) + "\ufffd" * 0x800 + "".join(map(chr, range(0xE000, _CLASSED_BELOW)))
    for flag, pattern in patterns:
        for m in re.finditer(pattern, chars):
            table[m.start() : m.end()] |= flag
    table[0xD800:0xE000] &= 0  # the placeholders above were U+FFFD, not surrogates
    alpha = np.fromiter(map(str.isalpha, chars), dtype=bool, count=len(chars))
    table[: len(chars)][alpha] |= ALPHA
    table[0xD800:0xE000] &= ~np.uint8(ALPHA)
    return table


@njit(cache=True, nogil=True)
def mix(h):
    """splitmix64's finaliser of one uint64: a bijection that spreads every input bit over all 64."""
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@njit(cache=True, nogil=True)
def _mix_all(flat):
    for i in range(len(flat)):
        flat[i] = mix(flat[i])


def mix64(h: np.ndarray) -> np.ndarray:
    """`mix` of every element of a C-contiguous uint64 array, in place (word hashes here, MinHash lanes in
    dedup, n-gram hashes in eval_metrics)."""
    assert h.dtype == np.uint64 and h.flags.c_contiguous
    _mix_all(h.reshape(-1))
    return h


@njit(cache=True, nogil=True)
def _finish_hash(h, length):
    """A word's hash from its sum and length."""
    return mix(h + np.uint64(length) * _LENGTH_MIX)


@njit(cache=True, nogil=True)
def _word_spans(classes, cp):
    """(first character, end, is CJK, hash) of every word of a batch, in one compiled pass over its characters.

    A word is a run of WORD characters that are not CJK, or one CJK character. Its hash is
    sum((cp + 1) * P**(position in the word)) + length * _LENGTH_MIX (mod 2**64), through splitmix64."""
    n = len(classes)
    count, inside = 0, False
    for i in range(n):  # count first, so the outputs are allocated once at their size
        c = classes[i]
        run = (c & (WORD | CJK)) == WORD
        count += (run and not inside) + ((c & CJK) != 0)
        inside = run
    starts, ends = np.empty(count, np.int64), np.empty(count, np.int64)
    cjk, hashes = np.zeros(count, np.bool_), np.empty(count, np.uint64)
    k, inside = -1, False
    h, power = np.uint64(0), np.uint64(1)
    for i in range(n):
        c = classes[i]
        if (c & (WORD | CJK)) == WORD:
            if not inside:
                k += 1
                starts[k], inside, h, power = i, True, np.uint64(0), np.uint64(1)
            h += (np.uint64(cp[i]) + np.uint64(1)) * power
            power *= _P
            continue
        if inside:
            ends[k], hashes[k], inside = i, _finish_hash(h, i - starts[k]), False
        if c & CJK:
            k += 1
            starts[k], ends[k], cjk[k] = i, i + 1, True
            hashes[k] = _finish_hash(np.uint64(cp[i]) + np.uint64(1), 1)
    if inside:
        ends[k], hashes[k] = n, _finish_hash(h, n - starts[k])
    return starts, ends, cjk, hashes


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def word_hashes(words: list[str]) -> np.ndarray:
    """The hash of each (non-empty) word, taken whole, in order: what `WordArrays` gives that word."""
    cp = code_points(_SEP.join(words))
    runs = np.full(len(cp), WORD, dtype=np.uint8)  # each word is one run, whatever its characters' classes
    runs[cp == 0] = 0
    hashes = _word_spans(runs, cp)[3]
    if len(hashes) != len(words):
        raise ValueError("word_hashes takes non-empty words without NUL characters")
    return hashes


def hash_words(words: list[str]) -> np.ndarray:
    """Sorted unique hashes of the given words, for `WordArrays.isin` (empty strings are left out)."""
    return unique(word_hashes([w for w in words if w]))


def unique(values: np.ndarray) -> np.ndarray:
    """np.unique(values) for integer keys, by sorting: numpy 2.4's np.unique without return_* options uses a
    hash table, ~10x slower on the int64/uint64 keys used here (document * n + item, word hashes)."""
    out = np.sort(values, axis=None)
    if len(out) > 1:
        distinct = np.empty(len(out), dtype=bool)
        distinct[0] = True
        np.not_equal(out[1:], out[:-1], out=distinct[1:])
        out = out[distinct]
    return out


@njit(cache=True, nogil=True)
def positions(codes, table, mask):
    """Sorted positions p where table[codes[p]] & mask is not 0; code points past the table's end read its
    last entry. One compiled pass: ~5x faster than np.take + np.flatnonzero, where hits are rare."""
    out = np.empty(len(codes), np.int64)  # only the pages written to are ever touched
    n, last = 0, len(table) - 1
    for p in range(len(codes)):
        if table[min(codes[p], last)] & mask:
            out[n] = p
            n += 1
    return out[:n].copy()


def span_indexes(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indexes starts[i], ..., starts[i] + lengths[i] - 1 of every span, concatenated in order."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - ends + lengths, lengths) + np.arange(int(ends[-1]) if len(ends) else 0)


_CASED_BELOW = 0x20000  # no character from U+20000 on (ideographs, tags, private use) has a lower case


@lru_cache(maxsize=1)
def lower_table() -> np.ndarray:
    """uint32 per code point: its lower-case form, as str.lower gives it, for every character that lower-cases
    to one character by itself. 'İ' (two characters) and 'Σ' (final sigma depends on its neighbours) map
    to themselves: texts holding them are lower-cased as strings (_lowered_codes)."""
    table = np.arange(_MAX_UNICODE, dtype=np.uint32)
    chars = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, _CASED_BELOW)))  # no surrogates
    low = code_points(chars[:0x130].lower() + "\u0130" + chars[0x131:].lower())
    assert len(low) == len(chars), "only U+0130 lower-cases to more than one character"
    table[:0xD800], table[0xE000:_CASED_BELOW] = low[:0xD800], low[0xD800:]
    table[0x3A3] = 0x3A3
    return table


def _lowered_codes(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(code points of "\x00".join of the lower-cased texts, their class flags, where each text starts in them;
    n_docs + 1 entries). Table look-ups per code point: ~3x faster than str.lower on text that is not all ASCII."""
    joined = _SEP.join(texts)
    if "\u0130" in joined or "\u03a3" in joined:
        lowered = [t.lower() for t in texts]
        codes = code_points(_SEP.join(lowered))
        classes = np.take(char_classes(), codes)
        sizes = np.fromiter(map(len, lowered), dtype=np.int64, count=len(texts))
    else:
        codes, classes = _lower_and_classify(code_points(joined), lower_table(), char_classes())
        sizes = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    first = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(sizes + 1, out=first[1:])
    return codes, classes, first


@njit(cache=True, nogil=True)
def _lower_and_classify(cp, lower, classes):
    """(lower[cp], classes[lower[cp]]) in one pass: ~2.5x faster than two np.take."""
    codes, flags = np.empty(len(cp), np.uint32), np.empty(len(cp), np.uint8)
    for i in range(len(cp)):
        c = lower[cp[i]]
        codes[i], flags[i] = c, classes[c]
    return codes, flags


class _Lowered:
    """`WordArrays.lower`: text i lower-cased, decoded from the code points when first asked for (the
    filter rules read a few documents' texts, never all)."""

    def __init__(self, codes: np.ndarray, first: np.ndarray) -> None:
        self._codes, self._first, self._texts, self._n = codes, first, {}, len(first) - 1

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> str:
        text = self._texts.get(i)  # the rules ask for the same few texts many times: that path is short
        if text is None:
            if not -self._n <= i < self._n:
                raise IndexError(i)
            i = int(i) % self._n
            start, end = int(self._first[i]), int(self._first[i + 1]) - 1  # the separator is not the text's
            text = self._texts[i] = self._codes[start:end].tobytes().decode("utf-32-le", "surrogatepass")
        return text


class WordArrays:
    """The words of `n_docs` documents; per-word arrays are in document order.

    lower           each text lower-cased (what the words were cut from), decoded when asked for
    offsets         int64, n_docs + 1: document i's words are [offsets[i], offsets[i + 1])
    doc             int64 per word: its document
    hashes          uint64 per word
    lengths         int64 per word: characters
    first_char      int64 per word: its first character in `codes`
    starts          int64 per word: its first character in its document's lower-cased text
    cjk             bool per word: a CJK character
    latin           bool per word: only lower-case Latin letters ([a-z\xdf-\xf6\xf8-\u024f]+)
    codes           uint32 code points of "\x00".join(lower)
    classes         uint8 class flags of those code points
    doc_first_char  int64, n_docs + 1: where each document starts in `codes`
    """

    def __init__(self, texts: list[str]):
        self.n_docs = len(texts)
        self.codes, self.classes, self.doc_first_char = _lowered_codes(texts)
        self.lower = _Lowered(self.codes, self.doc_first_char)
        self.first_char, self._ends, self.cjk, self.hashes = _word_spans(self.classes, self.codes)
        self.lengths = self._ends - self.first_char
        self.offsets = np.searchsorted(self.first_char, self.doc_first_char).astype(np.int64)
        self.doc = np.repeat(np.arange(self.n_docs, dtype=np.int64), np.diff(self.offsets))

    @classmethod
    def from_texts(cls, texts: list[str]) -> WordArrays:
        return cls(texts)

    @cached_property
    def starts(self) -> np.ndarray:
        return self.first_char - self.doc_first_char[self.doc]

    @cached_property
    def latin(self) -> np.ndarray:
        # A word is Latin when none of its characters lacks the flag: count the non-Latin ones per word.
        non_latin = np.zeros(len(self.codes) + 1, dtype=np.int64)
        np.cumsum((self.classes & LATIN) == 0, out=non_latin[1:])
        return (non_latin[self._ends] - non_latin[self.first_char]) == 0

    def isin(self, table: np.ndarray) -> np.ndarray:
        """bool per word: its hash is in `table` (sorted unique hashes, e.g. from `hash_words`)."""
        if len(table) == 0 or len(self.hashes) == 0:
            return np.zeros(len(self.hashes), dtype=bool)
        at = np.searchsorted(table, self.hashes).clip(max=len(table) - 1)
        return table[at] == self.hashes

    def per_doc(self, values: np.ndarray | None = None) -> np.ndarray:
        """Sum per document of a per-word array (bool counts); None counts the words."""
        if values is None:
            return np.diff(self.offsets)
        if values.dtype == bool:
            return np.bincount(self.doc[values], minlength=self.n_docs)
        return np.bincount(self.doc, weights=values, minlength=self.n_docs)

    def words_of(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))


class WordIndex:
    """Vocabulary look-up for `WordArrays` hashes: a direct-mapped table on a slice of the hash bits
    chosen so that no two vocabulary words share a slot, then one comparison with the full hash (one
    gather per word instead of a binary search: ~10x faster than searchsorted)."""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = list(vocab)
        assert len(set(self.vocab)) == len(self.vocab) and all(self.vocab), "distinct non-empty words"
        hashes = word_hashes(self.vocab)
        n = len(hashes)
        for bits, shift in ((b, s) for b in range(max(4, 2 * n.bit_length()), 31) for s in range(64 - b)):
            slots = ((hashes >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
            if len(unique(slots)) == n:
                break
        self._shift, self._mask = np.uint64(shift), np.uint64((1 << bits) - 1)
        self._slots = np.full(1 << bits, n, dtype=np.int32)  # n: no word (compares with the sentinel)
        self._slots[slots] = np.arange(n, dtype=np.int32)
        self._hashes = np.append(hashes, ~hashes[0] if n else np.uint64(0))

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int32 vocabulary index per hash, bool: it is a vocabulary word); the index is only
        meaningful where the flag is set."""
        return _lookup(hashes, self._slots, self._hashes, self._shift, self._mask, len(self.vocab))


@njit(cache=True, nogil=True)
def _lookup(hashes, slots, vocab_hashes, shift, mask, n_vocab):
    """WordIndex.lookup in one compiled pass (numpy took seven over the words)."""
    at, found = np.empty(len(hashes), np.int32), np.empty(len(hashes), np.bool_)
    for w in range(len(hashes)):
        a = slots[(hashes[w] >> shift) & mask]
        at[w], found[w] = a, (vocab_hashes[a] == hashes[w]) & (a < n_vocab)
    return at, found


# --- one text at a time ----------------------------------------------------------------------------

_ASCII_RUN = re.compile(r"[a-z0-9]+")
_ALNUM_RUN = re.compile(r"[^\W_]+")
_CJK_AWARE_RUN = re.compile(f"[{CJK_CHARS}]|[^\\W_{CJK_CHARS}]+")
_CJK = re.compile(f"[{CJK_CHARS}]")
_MAYBE_NON_ASCII_ALNUM = re.compile("[^\x00-\x7f\u2000-\u206f]")  # curly quotes and dashes are not


class Words(NamedTuple):
    lower: str  # text.lower()
    words: list[str]  # its letter/digit runs, each CJK character separate; do not modify
    has_cjk: bool


@lru_cache(maxsize=4)
def lower_words(text: str) -> Words:
    """The lower-cased text and its words, cached: the filter stage passes the same (redacted) text
    object to quality, the offensive-content scorer and dedup, so three tokenizations become one."""
    low = text.lower()
    if low.isascii() or not _MAYBE_NON_ASCII_ALNUM.search(low):
        return Words(low, _ASCII_RUN.findall(low), False)  # the simplest pattern scans fastest
    has_cjk = _CJK.search(low) is not None
    return Words(low, (_CJK_AWARE_RUN if has_cjk else _ALNUM_RUN).findall(low), has_cjk)
