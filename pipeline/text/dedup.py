"""Exact and near-duplicate detection for the filter stage, a whole batch of documents at a time.

    words = WordArrays.from_texts(texts)          # one tokenization, shared with the other filter rules
    exact_keys(words)                  -> (n_docs,) "S16": a 128-bit key of each document's word sequence
    MinHasher(...).signatures(words)   -> (n_docs, num_perm) uint32 One Permutation MinHash signatures
    near_duplicate_groups(sigs, bands, threshold) -> {dropped index: representative index}

The same grouping in pieces, for dedup spread over shards and partitions (`pipeline.filter` runs them):
`band_keys` (the LSH band keys of signatures), `bucket_pairs` (the candidate pairs of buckets),
and `similar` (the verification of pairs); `pipeline.dedup_steps` finds the connected components.

`exact_key(text)` and `MinHasher.signature(text)` are the same functions on a batch of one text.
Words are those of `wordarrays.lower_words` (lower-cased letter/digit runs, each CJK character alone),
so case, punctuation and whitespace never matter. Keys and signatures come from compiled loops (numba)
over the 64-bit word hashes of `WordArrays` (no Python call per document or per word), and
deterministic across processes and machines (fixed constants and seeds, uint64 arithmetic that wraps
mod 2**64): Python's salted `hash()` is never used.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.text.wordarrays import WordArrays, mix, mix64

_U64 = np.uint64
_LOW32 = _U64(0xFFFFFFFF)
_EMPTY = _U64(1 << 32)  # above every 32-bit value: marks a bin without shingles
_FEW_BINS = 40  # documents with at most this many full bins are densified by a min over them, not by probing


# --- exact keys ------------------------------------------------------------------------------------

# Two lanes of 64 bits; per lane an odd position multiplier and an additive constant (fixed forever:
# changing them changes every key).
_KEY_LANES = np.array([[0x9E3779B97F4A7C15, 0x243F6A8885A308D3, 0xD6E8FEB86659FD93],
                       [0xC2B2AE3D27D4EB4F, 0x13198A2E03707344, 0xA0761D6478BD642F]], dtype=np.uint64)


def exact_keys(words: WordArrays) -> np.ndarray:
    """One 128-bit key per document (dtype "S16"), equal iff the documents' word sequences are equal.

    Each lane of 64 bits is mix(sum over the words of mix(word hash + (position + 1) * G) + count * C)
    with its own odd G and constant C: a word at another position, a missing or an extra word each
    change the sum by a pseudo-random 64-bit amount, so two different sequences share a lane with
    probability ~2**-64 and a key with ~2**-128 -- given their words' 64-bit hashes differ: two
    distinct words share a `WordArrays` hash with probability ~2**-64, which bounds the key's
    collision rate from below (not adversarially safe). Case, punctuation and whitespace are not
    words, so copies differing only in those share a key; all documents without words share one.
    """
    lanes = _key_lanes(words.hashes, words.offsets, _KEY_LANES)
    return lanes.astype("<u8", copy=False).view("S16").reshape(words.n_docs)


@njit(cache=True, nogil=True)
def _key_lanes(hashes, offsets, constants):
    """(n_docs, 2) uint64: per document and lane (g, c, s),
    mix(sum of mix(hash + (position + 1) * g) + count * c + s)."""
    n_docs = len(offsets) - 1
    lanes = np.empty((n_docs, len(constants)), np.uint64)
    for d in range(n_docs):
        first, count = offsets[d], offsets[d + 1] - offsets[d]
        for lane in range(len(constants)):
            g, c, s = constants[lane, 0], constants[lane, 1], constants[lane, 2]
            total = np.uint64(0)
            for j in range(count):
                total += mix(hashes[first + j] + np.uint64(j + 1) * g)
            lanes[d, lane] = mix(total + np.uint64(count) * c + s)
    return lanes


def exact_key(text: str) -> str:
    """Hex string (32 characters) of `exact_keys` for one text: the same for copies that differ only in
    case, punctuation or whitespace."""
    return exact_keys(WordArrays.from_texts([text])).view(np.uint8).tobytes().hex()


# --- MinHash -------------------------------------------------------------------------------------


class MinHasher:
    """One Permutation MinHash with optimal densification over shingles of `shingle_size` consecutive words.

    Shingles: every run of `shingle_size` consecutive words of one document (never across documents);
    a document with fewer words is one shingle of all its words, and a document without words is one
    shingle of zero words, so its signature is a fixed one (all `num_perm` values equal, depending on
    the seed only; all empty documents are near duplicates of each other). A run of n words hashes to
    sum_i word_hash_i * P_i + n * T (mod 2**64) with random odd P_i.

    Signature (One Permutation Hashing; Li, Owen & Zhang, "One Permutation Hashing", NIPS 2012): each
    shingle hash is mixed with a seed (splitmix64) into y; the top 32 bits of y pick one of K =
    `num_perm` bins ((y >> 32) * K >> 32) and the low 32 bits are its value; bin i of a document keeps
    the minimum value of its shingles there. Cost per shingle is
    constant, not K multiplications. For two documents, a bin that is non-empty for either holds the
    same value in both exactly when the minimum of their union there is a shared shingle, which has
    probability J, the Jaccard similarity of their shingle sets.

    Densification (Shrivastava, "Optimal Densification for Fast and Accurate Minwise Hashing", ICML
    2017): an empty bin j takes the value of the first non-empty bin in j's probe sequence, a seeded
    pseudo-random order of all bins that depends on (seed, j) only, never on the document. Shrivastava
    draws probes with replacement from a 2-universal hash of (j, attempt); here j's sequence is the
    order in which those draws would first reach each bin: a random permutation, the same first hit
    in distribution, with at most K - 1 probes. Two documents walk the same sequence and both end at
    the first bin that is non-empty for their union unless one of them finds a bin of its own first
    (then they disagree, as the union's minimum there is not shared), so the probability of agreement
    stays exactly J in every bin, with variance close to that of K independent MinHashes (empty bins
    of one document borrow from independently chosen bins). With a single non-empty bin (short
    documents) all bins take its value. In a document with few full bins, an empty bin takes the full
    bin of lowest rank in its sequence (a minimum over the full bins); otherwise it walks its sequence.

    Values are 32-bit: unrelated values agree with probability 2**-32. Bins of a short document copy a
    few values, so its positions are not independent (LSH banding's S-curve assumes they are).
    All constants (position multipliers, seeds, probe orders) come from splitmix64 of the seed, so
    signatures do not depend on numpy's random generators.
    """

    def __init__(self, num_perm: int = 128, shingle_size: int = 5, seed: int = 1):
        if num_perm < 1 or shingle_size < 1:
            raise ValueError("num_perm and shingle_size must be >= 1")
        self.num_perm, self.shingle_size, self.seed = num_perm, shingle_size, seed
        constant = lambda i: mix64(np.array([(seed * 0x9E3779B97F4A7C15 + i) % 2**64], dtype=np.uint64))  # noqa: E731
        odd = np.concatenate([constant(i) for i in range(shingle_size + 2)]) | _U64(1)
        self._position, (self._length_tag, self._mix_seed) = odd[:shingle_size], odd[shingle_size:]
        self._probe_seed = constant(shingle_size + 2)[0]
        self._order = self._rank = None  # probe orders, built on first use

    def _probe_orders(self) -> tuple[np.ndarray, np.ndarray]:
        """(order, rank): order[j] = j's probe sequence (j first, then the other bins in a seeded random
        order); rank[j, b] = rank of bin b in it * K + b, so a minimum of ranks names its bin too."""
        if self._order is None:
            K = self.num_perm
            j = np.arange(K, dtype=np.uint64)
            with np.errstate(over="ignore"):
                keys = mix64((j[:, None] << _U64(32)) + j[None, :] + self._probe_seed) >> _U64(1)
            keys[np.arange(K), np.arange(K)] = 0  # each bin is first in its own sequence
            self._order = np.argsort(keys, axis=1, kind="stable").astype(np.int64)
            rank = np.empty((K, K), dtype=np.int64)
            rank[np.arange(K)[:, None], self._order] = np.arange(K)[None, :] * K + self._order
            self._rank = rank
        return self._order, self._rank

    # -- signatures --

    def signatures(self, words: WordArrays) -> np.ndarray:
        """(n_docs, num_perm) uint32; the share of equal positions of two rows estimates the Jaccard
        similarity of the documents' shingle sets. Rows do not depend on the rest of the batch."""
        order, rank = self._probe_orders()
        return _signatures(words.hashes, words.offsets, self._position, self._length_tag, self._mix_seed, order, rank)

    def signature(self, text: str) -> np.ndarray:
        """uint32 array of length num_perm for one text (`signatures` of a batch of one)."""
        return self.signatures(WordArrays.from_texts([text]))[0]


@njit(cache=True, nogil=True)
def _signatures(hashes, offsets, position, length_tag, mix_seed, order, rank):
    """The signatures of MinHasher (see its docstring), one document at a time in a compiled loop."""
    k, K = len(position), len(order)
    n_docs = len(offsets) - 1
    sig = np.empty((n_docs, K), np.uint32)
    table = np.empty(K, np.uint64)
    full = np.empty(K, np.int64)
    for d in range(n_docs):
        table[:] = _EMPTY
        first, count = offsets[d], offsets[d + 1] - offsets[d]
        size = min(k, count)  # a document with fewer words than k is one shingle of all of them
        for start in range(first, first + max(count - k, 0) + 1):
            h = np.uint64(size) * length_tag
            for i in range(size):
                h += hashes[start + i] * position[i]
            y = mix(h ^ mix_seed)
            cell = ((y >> np.uint64(32)) * np.uint64(K)) >> np.uint64(32)
            table[cell] = min(table[cell], y & _LOW32)
        n_full = 0
        for j in range(K):
            if table[j] != _EMPTY:
                full[n_full] = j
                n_full += 1
            sig[d, j] = np.uint32(table[j] & _LOW32)
        if n_full == K:
            continue
        # Densify: an empty bin j takes the value of the first full bin in j's probe order, found as the
        # full bin of lowest rank in j's order when few are full, else by walking the order.
        for j in range(K):
            if table[j] != _EMPTY:
                continue
            if n_full <= _FEW_BINS:
                best = rank[j, full[0]]
                for f in range(1, n_full):
                    best = min(best, rank[j, full[f]])
                sig[d, j] = sig[d, best % K]
            else:
                step = 1
                while table[order[j, step]] == _EMPTY:
                    step += 1
                sig[d, j] = sig[d, order[j, step]]
    return sig


# --- LSH grouping ----------------------------------------------------------------------------------

_BAND_MIXER_SEED = 12345  # fixed forever: changing it changes which documents become candidates


def band_keys(signatures: np.ndarray, bands: int) -> np.ndarray:
    """(n_docs, bands) uint64: the 64-bit key of each LSH band of each signature (see
    `near_duplicate_groups`); two documents are candidates when they share a band's key."""
    n_perm = signatures.shape[1]
    bands = max(1, min(bands, n_perm))
    rows = n_perm // bands
    mixer = np.random.default_rng(_BAND_MIXER_SEED).integers(1, 2**63, size=rows, dtype=np.uint64)
    mixer = mixer * np.uint64(2) + np.uint64(1)
    keys = np.empty((len(signatures), bands), np.uint64)
    for band in range(bands):
        block = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
        with np.errstate(over="ignore"):
            keys[:, band] = (block * mixer).sum(axis=1)  # a collision only costs a verification
    return keys


@njit(cache=True, nogil=True)
def bucket_pairs(starts, ends, members):
    """(a, b) int64 arrays: the candidate pairs of LSH buckets, bucket i being members[starts[i]:ends[i]]
    in index order. All pairs of a bucket of up to 64; a larger bucket (many copies) pairs each member
    with the first and with the previous one only, which keeps it linear (as `_merge_bucket`)."""
    total = 0
    for i in range(len(starts)):
        m = ends[i] - starts[i]
        total += m * (m - 1) // 2 if m <= 64 else 2 * (m - 1) - 1
    a = np.empty(total, np.int64)
    b = np.empty(total, np.int64)
    k = 0
    for i in range(len(starts)):
        s, e = starts[i], ends[i]
        if e - s <= 64:
            for x in range(s, e):
                for y in range(x + 1, e):
                    a[k], b[k] = members[x], members[y]
                    k += 1
        else:
            for y in range(s + 1, e):
                a[k], b[k] = members[s], members[y]
                k += 1
                if y - 1 != s:
                    a[k], b[k] = members[y - 1], members[y]
                    k += 1
    return a, b


def similar(sig_a: np.ndarray, sig_b: np.ndarray, threshold: float) -> np.ndarray:
    """Per row, whether the share of equal positions of the two signatures (the Jaccard estimate) is at
    least `threshold`: the verification of a candidate pair."""
    return np.count_nonzero(sig_a == sig_b, axis=1) >= threshold * sig_a.shape[1]


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


def near_duplicate_groups(signatures: list[np.ndarray] | np.ndarray, bands: int, threshold: float) -> dict[int, int]:
    """{index of a dropped document: index of the cluster's representative (its lowest index)}.

    LSH banding: each signature of length n = bands * rows is cut into `bands` bands of `rows`
    values; documents sharing any whole band become candidates. Two documents with Jaccard
    similarity s agree on one position with probability s, so, if positions were independent, they
    would become candidates with probability 1 - (1 - s**rows) ** bands: an S-curve rising around
    (1/bands) ** (1/rows). With the defaults (128 values, 16 bands of 8; midpoint (1/16)**(1/8) =
    0.71): s=0.5 -> 6%, s=0.7 -> 61%, s=0.8 -> 95%, s=0.9 -> 99.99%. One Permutation signatures
    (`MinHasher`) are close to that for documents with many more shingles than positions; a short
    document's densified positions copy a few values, so its agreements come in runs and the curve
    is flatter (candidates are then found by whole copied runs). Every candidate pair is then
    verified: it is a duplicate only when the share of equal signature positions (the Jaccard
    estimate) is >= threshold. Verified pairs are merged with union-find, so clusters are transitive
    (A~B and B~C put C with A even if A !~ C), and every member except the lowest index is reported;
    the first occurrence is kept. Values beyond bands * rows (when bands does not divide n) are used
    for verification only.
    """
    if len(signatures) < 2:
        return {}
    sigs = signatures if isinstance(signatures, np.ndarray) else np.vstack(signatures)  # no copy of an array
    n_docs = len(sigs)
    parent = list(range(n_docs))
    all_keys = band_keys(sigs, bands)
    for band in range(all_keys.shape[1]):
        keys = all_keys[:, band]
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], n_docs]
        for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
            _merge_bucket(order[s:e], sigs, parent, threshold)
    groups = {}
    for i in range(n_docs):
        root = _find(parent, i)
        if root != i:
            groups[i] = root
    return groups


def _merge_bucket(members: np.ndarray, sigs: np.ndarray, parent: list[int], threshold: float) -> None:
    """Verify and union the candidate pairs of one LSH bucket (members in index order)."""
    members = members.tolist()
    # All pairs for normal buckets; a huge bucket (many exact copies) compares each doc with the
    # first and the previous member only, which keeps it linear.
    pairs = (
        ((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
        if len(members) <= 64
        else ((p, b) for i, b in enumerate(members[1:], 1) for p in {members[0], members[i - 1]})
    )
    for a, b in pairs:
        ra, rb = _find(parent, a), _find(parent, b)
        if ra == rb:
            continue
        if np.count_nonzero(sigs[a] == sigs[b]) >= threshold * sigs.shape[1]:
            # Union by lowest index, so every root is its cluster's first document.
            parent[max(ra, rb)] = min(ra, rb)
