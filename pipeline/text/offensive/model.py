"""The trained offensive-content classifier: logistic regression over hashed word and character n-grams.

    lines, first, texts = unit_probs(words)           P(offensive) of every line and every text of a batch
    probs = text_probs(texts)                         P(offensive) of each text taken whole
    rows = feature_rows(words, bits, char_sizes)      the hashed features of each text (for training)

Features of a unit (a line, or a whole text) are read off the batch's `WordArrays` (the lower-cased
words the filter cuts once per batch): each word's hash (unigram), the pair of it and the previous word
on the same line (bigram), and the character 3- and 4-grams of the word with boundary marks ("<ki",
"ill>"), each hashed into one table of 2**bits weights. A unit's logit is bias + sum(weights of its
feature occurrences) / sqrt(their number), the same normalisation training used, so a long text is not
more offensive for being long; a whole text adds up its lines (no bigram spans a line break). One compiled
pass over the words scores every line and text of a batch; a word's own features are summed once per
distinct word, so a frequent word costs two look-ups (itself and its bigram).

The weights (`lexicons/offensive_model.npz`, written by `python -m benchmarks.offensive_train`, sources in
DATA_SOURCES.md) are loaded once per process with allow_pickle=False. Scores are deterministic: fixed
hash constants, float64 sums in word order.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import njit

from pipeline.text import LEXICONS
from pipeline.text.wordarrays import WordArrays, mix

WEIGHTS = LEXICONS / "offensive_model.npz"
_BIGRAM_SEED = np.uint64(0x2545F4914F6CDD1D)
_CHAR_SEED = np.uint64(0x9E3779B97F4A7C15)
_P = np.uint64(0x100000001B3)
_MAX_CHAR_WORD = 24  # longer "words" (URLs, hashes, base64) get no character n-grams
_BOUNDARY = np.uint64(0x3C)  # '<' and '>' mark a word's edges in its character n-grams


class Model(NamedTuple):
    weights: np.ndarray  # float32, 2**bits
    bias: float
    bits: int
    char_sizes: np.ndarray  # int64: the character n-gram lengths
    meta: dict  # training record: sources, counts, date, held-out figures


@lru_cache(maxsize=1)
def load_model(path: Path = WEIGHTS) -> Model:
    """The classifier's weights, read once per process from an npz without pickle."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: the offensive-content classifier's weights are missing; rebuild them with "
                                "python -m benchmarks.offensive_train (see DATA_SOURCES.md)")
    with np.load(path, allow_pickle=False) as z:
        weights = np.ascontiguousarray(z["weights"], dtype=np.float32)
        bits = int(z["bits"])
        if len(weights) != 1 << bits:
            raise ValueError(f"{path}: {len(weights)} weights, expected 2**{bits}")
        return Model(weights, float(z["bias"]), bits, np.asarray(z["char_sizes"], dtype=np.int64),
                     json.loads(str(z["meta"])))


@njit(cache=True, nogil=True)
def _word_features(h, prev, has_prev, codes, start, length, char_sizes, shift, out):
    """Write the feature buckets of one word into `out`; return how many. The word's hash `h`, the previous
    word's `prev` (when `has_prev`), and its characters codes[start:start + length]."""
    n = 0
    out[n] = np.int64(mix(h) >> shift)
    n += 1
    if has_prev:
        out[n] = np.int64(mix(prev * _P + h + _BIGRAM_SEED) >> shift)
        n += 1
    if length <= _MAX_CHAR_WORD:
        padded = length + 2
        for size in char_sizes:
            if size > padded:
                continue
            for i in range(padded - size + 1):
                g = _CHAR_SEED + np.uint64(size)
                for j in range(i, i + size):
                    c = _BOUNDARY if j == 0 or j == padded - 1 else np.uint64(codes[start + j - 1])
                    g = g * _P + c + np.uint64(1)
                out[n] = np.int64(mix(g) >> shift)
                n += 1
    return n


def _buffer(model_sizes: np.ndarray) -> np.ndarray:
    return np.empty(2 + sum(_MAX_CHAR_WORD + 3 - int(s) for s in model_sizes), dtype=np.int64)


@njit(cache=True, nogil=True)
def _line_units(codes, first_char, lengths, doc_first_char, offsets):
    """(line of each word, first line of each document (n_docs + 1)): lines are numbered over the batch, one per
    line of text.split("\\n") of every document, with words or not."""
    n_docs = len(offsets) - 1
    unit, first = np.empty(len(first_char), np.int64), np.empty(n_docs + 1, np.int64)
    u = 0
    for d in range(n_docs):
        first[d] = u
        pos = doc_first_char[d]
        for w in range(offsets[d], offsets[d + 1]):
            for i in range(pos, first_char[w]):
                if codes[i] == 10:
                    u += 1
            unit[w] = u
            pos = first_char[w] + lengths[w]
        for i in range(pos, doc_first_char[d + 1] - 1):
            if codes[i] == 10:
                u += 1
        u += 1
    first[n_docs] = u
    return unit, first


@njit(cache=True, nogil=True)
def _unit_sums(hashes, first_char, lengths, codes, unit, n_units, char_sizes, shift, weights, buf):
    """(sum of weights, number of features) per unit; words are in order and `unit` never decreases.

    A word's own features (unigram and character n-grams) depend on the word alone: their sum is computed once
    per distinct word of the batch and kept in an open-addressing table, so a frequent word costs one look-up
    there and one for its bigram instead of ~12 in the weights."""
    sums, counts = np.zeros(n_units), np.zeros(n_units, np.int64)
    cap = 1 << 12
    while cap < 2 * len(hashes) and cap < (1 << 16):  # small enough to stay in cache; the rest is computed
        cap <<= 1
    keys, used = np.zeros(cap, np.uint64), np.zeros(cap, np.bool_)
    cached_sum, cached_n = np.zeros(cap), np.zeros(cap, np.int64)
    n_cached, mask = 0, np.uint64(cap - 1)
    for w in range(len(hashes)):
        u = unit[w]
        h = hashes[w]
        slot = h & mask
        while used[slot] and keys[slot] != h:
            slot = (slot + np.uint64(1)) & mask
        if used[slot]:
            s, n = cached_sum[slot], cached_n[slot]
        else:
            n = _word_features(h, np.uint64(0), False, codes, first_char[w], lengths[w], char_sizes, shift, buf)
            s = 0.0
            for k in range(n):
                s += weights[buf[k]]
            if 2 * n_cached < cap:
                used[slot], keys[slot], cached_sum[slot], cached_n[slot] = True, h, s, n
                n_cached += 1
        if w > 0 and unit[w - 1] == u:
            s += weights[np.int64(mix(hashes[w - 1] * _P + h + _BIGRAM_SEED) >> shift)]
            n += 1
        sums[u] += s
        counts[u] += n
    return sums, counts


@njit(cache=True, nogil=True)
def _rows(hashes, first_char, lengths, codes, line, row, n_rows, char_sizes, shift, buf):
    """CSR (ptr, buckets) of every row's feature occurrences (a row: a document; bigrams stay within a line),
    the features _unit_sums adds."""
    total = 0
    for w in range(len(hashes)):
        total += 2 + max(0, min(lengths[w], _MAX_CHAR_WORD) + 3) * len(char_sizes)
    idx = np.empty(total, np.int64)
    ptr = np.zeros(n_rows + 1, np.int64)
    n_idx = 0
    for w in range(len(hashes)):
        has_prev = w > 0 and line[w - 1] == line[w]
        prev = hashes[w - 1] if has_prev else np.uint64(0)
        n = _word_features(hashes[w], prev, has_prev, codes, first_char[w], lengths[w], char_sizes, shift, buf)
        idx[n_idx : n_idx + n] = buf[:n]
        n_idx += n
        ptr[row[w] + 1] += n
    for u in range(n_rows):
        ptr[u + 1] += ptr[u]
    return ptr, idx[:n_idx].copy()


def _probs(sums: np.ndarray, counts: np.ndarray, bias: float) -> np.ndarray:
    logits = bias + sums / np.sqrt(np.maximum(counts, 1))
    return np.where(counts > 0, 1.0 / (1.0 + np.exp(-logits)), 0.0)


def unit_probs(words: WordArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(offensive) of every line of every document, first line of each document (n_docs + 1), P(offensive)
    of each document taken whole), from one pass: document d's lines (text.split("\\n")) are
    lines[first[d]:first[d + 1]]; a whole text adds up its lines' features. A unit without words scores 0."""
    model = load_model()
    line, first = _line_units(words.codes, words.first_char, words.lengths, words.doc_first_char, words.offsets)
    sums, counts = _unit_sums(words.hashes, words.first_char, words.lengths, words.codes, line, int(first[-1]),
                              model.char_sizes, np.uint64(64 - model.bits), model.weights, _buffer(model.char_sizes))
    cum_sums, cum_counts = np.r_[0.0, np.cumsum(sums)], np.r_[0, np.cumsum(counts)]
    doc_sums, doc_counts = cum_sums[first[1:]] - cum_sums[first[:-1]], cum_counts[first[1:]] - cum_counts[first[:-1]]
    return _probs(sums, counts, model.bias), first, _probs(doc_sums, doc_counts, model.bias)


def line_probs(words: WordArrays) -> tuple[np.ndarray, np.ndarray]:
    """(P(offensive) of every line, first line of each document): `unit_probs` without the whole texts."""
    lines, first, _ = unit_probs(words)
    return lines, first


def text_probs(texts: list[str] | WordArrays) -> np.ndarray:
    """P(offensive) of each text taken whole (its lines' features together); a text without words scores 0."""
    return unit_probs(texts if isinstance(texts, WordArrays) else WordArrays.from_texts(texts))[2]


def feature_rows(words: WordArrays, bits: int, char_sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """CSR (ptr, buckets) of each document's feature occurrences, for training a model of 2**bits weights."""
    sizes = np.array(char_sizes, dtype=np.int64)
    line, _ = _line_units(words.codes, words.first_char, words.lengths, words.doc_first_char, words.offsets)
    return _rows(words.hashes, words.first_char, words.lengths, words.codes, line, words.doc, words.n_docs, sizes,
                 np.uint64(64 - bits), _buffer(sizes))
