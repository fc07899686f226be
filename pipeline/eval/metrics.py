"""Metrics of generated samples: diversity, repetition, length, stopping, memorisation.

Diversity and repetition are measured on words (`words(text)`), so they compare across tokenizers
and with published figures; length and memorisation on token ids.

    words(text)                        the words and punctuation marks of a text, as a list of str

    distinct_n(samples, 2)             unique 2-grams / all 2-grams, over all samples together
    self_bleu(samples)                 mean BLEU-4 of each sample against all the others (Zhu et al. 2018)
    seq_rep_n(samples, 4)              mean over samples of 1 - unique 4-grams / 4-grams (Welleck et al. 2020)
    memorised_share(samples, shards)   share of the samples' 8-grams found verbatim in the training tokens

All are pure functions of lists of items (words or token ids; the tokenizer stays outside),
hand-checkable in tests; tests/test_evaluate.py checks BLEU against NLTK's sentence_bleu.
Every function returns 0.0 when there is nothing to count, so metrics.json holds only numbers.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

from pipeline.text.wordarrays import mix64, unique

Sample = list  # of words (str) or token ids (int)
WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")  # a word (with inner apostrophes) or one punctuation mark


def words(text: str) -> list[str]:
    """Words and punctuation marks, lower-cased: "Don't go!" -> ["don't", "go", "!"]."""
    return WORD.findall(text.lower())

# --- diversity and repetition ----------------------------------------------------------------


def ngrams(tokens: Sample, n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(samples: list[Sample], n: int) -> float:
    """Share of unique n-grams among all n-grams of the samples (Li et al. 2016), pooled over samples."""
    grams = [g for s in samples for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def seq_rep_n(samples: list[Sample], n: int = 4) -> float:
    """Mean over samples of 1 - |unique n-grams| / |n-grams| within the sample; samples too short
    to hold an n-gram are left out (they cannot repeat one)."""
    reps = [1.0 - len(set(g)) / len(g) for g in (ngrams(s, n) for s in samples) if g]
    return float(np.mean(reps)) if reps else 0.0


def mean_length(samples: list[Sample]) -> float:
    return float(np.mean([len(s) for s in samples])) if samples else 0.0


def share(flags: Iterable[bool]) -> float:
    """Share of True values (0 for none): eos stops, flagged samples."""
    flags = list(flags)
    return sum(map(bool, flags)) / len(flags) if flags else 0.0


# --- BLEU and self-BLEU ----------------------------------------------------------------------

BLEU_EPSILON = 0.1  # Chen & Cherry (2014) smoothing method 1, as in Texygen's Self-BLEU via NLTK


def bleu(hypothesis: Sample, references: list[Sample], max_n: int = 4) -> float:
    """Sentence BLEU of one hypothesis against references, with uniform weights over n = 1..max_n.

    p_n = clipped n-gram matches / hypothesis n-grams, where a match count is clipped to the most
    times that n-gram occurs in any single reference (Papineni et al. 2002). Smoothing: a zero
    match count becomes BLEU_EPSILON, and a hypothesis without n-grams of order n counts 1 n-gram,
    so p_n = 0.1 instead of log(0) (short samples would otherwise all score 0). Brevity penalty
    BP = exp(1 - r / c) when the hypothesis length c is below r, the reference length closest to c
    (the shorter on a tie), else 1. An empty hypothesis, no references, or no unigram in common
    scores 0 (as NLTK's sentence_bleu, which this equals with SmoothingFunction().method1).
    """
    if not hypothesis or not references:
        return 0.0
    log_p = 0.0
    for n in range(1, max_n + 1):
        hyp = Counter(ngrams(hypothesis, n))
        most = Counter()
        for ref in references:
            most |= Counter(ngrams(ref, n))  # | keeps the max count of each n-gram
        matched = sum(min(c, most[g]) for g, c in hyp.items())
        if n == 1 and matched == 0:
            return 0.0
        log_p += math.log((matched or BLEU_EPSILON) / max(1, sum(hyp.values()))) / max_n
    c = len(hypothesis)
    r = min((len(ref) for ref in references), key=lambda length: (abs(length - c), length))
    bp = 1.0 if c >= r else math.exp(1.0 - r / c)
    return bp * math.exp(log_p)


def self_bleu(samples: list[Sample], max_n: int = 4, max_samples: int = 200) -> float:
    """Mean BLEU of each sample against all the other samples as references (higher = less diverse).

    Quadratic in the number of samples, so only the first max_samples take part. Empty samples are
    left out; fewer than two samples give 0.
    """
    pool = [s for s in samples if s][:max_samples]
    if len(pool) < 2:
        return 0.0
    return float(np.mean([bleu(s, pool[:i] + pool[i + 1 :], max_n) for i, s in enumerate(pool)]))


# --- memorisation: generated n-grams found verbatim in the training tokens -----------------------

_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio); arithmetic wraps mod 2**64


def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """uint64 hash of every n-gram of tokens: len(tokens) - n + 1 values (none if shorter than n).

    h = mix(sum_j (t[i + j] + 1) * M^(n-1-j)) mod 2**64, computed as n whole-array passes (Horner's
    rule), so cost is O(n * len) in numpy with no Python loop over positions. The +1 keeps token 0
    from vanishing. Distinct n-grams collide with probability about 2**-64 per pair.
    """
    t = np.asarray(tokens).astype(np.uint64) + np.uint64(1)
    m = len(t) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _MULT + t[j : j + m]
        return mix64(h)


def _lookup(wanted: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Indexes into sorted `wanted` of the hashes that are in it: O(len(hashes) * log len(wanted))."""
    if wanted.size == 0 or hashes.size == 0:
        return np.zeros(0, dtype=np.int64)
    at = np.minimum(np.searchsorted(wanted, hashes), len(wanted) - 1)
    return at[wanted[at] == hashes]


def memorised_hashes(wanted: np.ndarray, stream: Iterable[np.ndarray], n: int, chunk: int = 1 << 22) -> np.ndarray:
    """The subset of `wanted` (sorted unique n-gram hashes) that occurs in the token stream.

    The stream (an iterable of token arrays, e.g. memory-mapped shards, read as one sequence) is
    hashed in chunks of `chunk` tokens that overlap by n - 1, and each chunk's hashes are looked up
    in `wanted` by binary search. Memory is O(chunk + len(wanted)) however large the corpus, and every
    training n-gram is checked, so no cap or sampling of the corpus is needed: the samples' few
    thousand n-grams are the set, not the corpus' billions.
    """
    found = np.zeros(len(wanted), dtype=bool)
    carry = np.zeros(0, dtype=np.int64)
    for array in stream:
        for start in range(0, len(array), chunk):
            piece = np.concatenate([carry, np.asarray(array[start : start + chunk], dtype=np.int64)])
            found[_lookup(wanted, ngram_hashes(piece, n))] = True
            carry = piece[max(0, len(piece) - (n - 1)) :] if n > 1 else piece[:0]
    return wanted[found]


def memorised_share(samples: list[Sample], train_stream: Iterable[np.ndarray], n: int = 8,
                    chunk: int = 1 << 22) -> float:
    """Share of the samples' n-grams (with repeats) that occur verbatim somewhere in the training
    stream: 0 = all novel, 1 = every n-gram copied. Samples shorter than n contribute nothing."""
    per_sample = [ngram_hashes(np.asarray(s, dtype=np.int64), n) for s in samples]
    every = np.concatenate(per_sample) if per_sample else np.zeros(0, dtype=np.uint64)
    if every.size == 0:
        return 0.0
    seen = memorised_hashes(unique(every), train_stream, n, chunk)
    return float(np.isin(every, seen).mean())
