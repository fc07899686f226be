"""Exact and near-duplicate detection for the filter stage: normalised-text hashes and MinHash LSH.

    exact_key(text)                  blake2b of the lower-cased, punctuation-free, whitespace-collapsed text
    MinHasher(...).signature(text)   MinHash signature (uint32 array) over word shingles (CJK: characters)
    near_duplicate_groups(sigs, bands, threshold) -> {dropped index: representative index}

Both use `textclean.lower_words` (lower-cased letter/digit runs, each CJK character alone), which
quality and toxicity share. Hashes are deterministic across processes and machines (blake2b, fixed
seeds): Python's salted `hash()` is never used.
"""

from __future__ import annotations

import hashlib

import numpy as np

from pipeline.textclean import lower_words

_WORD_CACHE_MAX = 500_000


def exact_key(text: str) -> str:
    """Same key for copies that differ only in case, punctuation or whitespace.

    The key hashes the lower-cased letter/digit runs joined by single spaces (CJK characters one by one).
    """
    normal = " ".join(lower_words(text).words)
    return hashlib.blake2b(normal.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _hash64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class _HashCache(dict):
    """token -> 64-bit hash, computed on first use (lookups run in C via map)."""

    def __missing__(self, token: str) -> int:
        value = self[token] = _hash64(token)
        return value


class MinHasher:
    """MinHash over shingles of `shingle_size` consecutive tokens, with `num_perm` hash functions.

    Each token is hashed once (blake2b, cached); a shingle's 64-bit hash is a position-weighted sum
    of its tokens' hashes (odd random multipliers, mod 2**64), so shingles cost numpy arithmetic only.
    The shingle hash is folded to a 32-bit key x and the `num_perm` hash functions are Dietzfelbinger's
    multiply-add-shift h_i(x) = ((a_i * x + b_i) mod 2**64) >> 32 with random 64-bit a_i, b_i: a
    2-independent family like (a*x + b) mod p, without 128-bit products. The signature holds the
    minimum of each h_i over the shingles.
    Texts with fewer tokens than `shingle_size` are one shingle of all their tokens.
    """

    def __init__(self, num_perm: int = 128, shingle_size: int = 5, seed: int = 1):
        if num_perm < 1 or shingle_size < 1:
            raise ValueError("num_perm and shingle_size must be >= 1")
        self.num_perm, self.shingle_size, self.seed = num_perm, shingle_size, seed
        rng = np.random.default_rng(seed)
        draw = lambda n: rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # noqa: E731
        self._a = draw(num_perm)[:, None]
        self._b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)[:, None]
        self._position = draw(shingle_size)
        self._cache = _HashCache()

    def _token_hashes(self, tokens: list[str]) -> np.ndarray:
        if len(self._cache) > _WORD_CACHE_MAX:
            self._cache.clear()  # bounded memory on huge vocabularies; hashes are recomputed identically
        return np.fromiter(map(self._cache.__getitem__, tokens), dtype=np.uint64, count=len(tokens))

    def shingle_hashes(self, text: str) -> np.ndarray:
        """64-bit hashes of the text's token shingles (lower-cased, punctuation ignored; may repeat)."""
        tokens = lower_words(text).words
        if len(tokens) < self.shingle_size:
            return np.array([_hash64(" ".join(tokens))], dtype=np.uint64)
        hashes = self._token_hashes(tokens)
        k = self.shingle_size
        n = len(tokens) - k + 1
        # uint64 array arithmetic wraps modulo 2**64 silently, which is what the hash family wants.
        combined = hashes[:n] * self._position[0]
        for i in range(1, k):
            combined += hashes[i : i + n] * self._position[i]
        return combined  # repeated shingles may repeat: the minimum does not care

    def signature(self, text: str) -> np.ndarray:
        """uint32 array of length num_perm; equal positions estimate the shingle-set Jaccard similarity."""
        x = self.shingle_hashes(text)
        x ^= x >> np.uint64(32)  # fold to a 32-bit key: multiply-add-shift is 2-independent for those
        permuted = self._a * (x & np.uint64(0xFFFFFFFF))[None, :]
        permuted += self._b
        return (permuted.min(axis=1) >> np.uint64(32)).astype(np.uint32)


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


def near_duplicate_groups(signatures: list[np.ndarray], bands: int, threshold: float) -> dict[int, int]:
    """{index of a dropped document: index of the cluster's representative (its lowest index)}.

    LSH banding: each signature of length n = bands * rows is cut into `bands` bands of `rows`
    values; documents sharing any whole band become candidates. Two documents with Jaccard
    similarity s agree on one position with probability s, so they become candidates with
    probability 1 - (1 - s**rows) ** bands: an S-curve rising around (1/bands) ** (1/rows).
    With the defaults (128 values, 16 bands of 8; midpoint (1/16)**(1/8) = 0.71): s=0.5 -> 6%,
    s=0.7 -> 61%, s=0.8 -> 95%, s=0.9 -> 99.99%. Every candidate pair is then verified: it is a duplicate only when the share
    of equal signature positions (the Jaccard estimate) is >= threshold. Verified pairs are merged
    with union-find, so clusters are transitive (A~B and B~C put C with A even if A !~ C), and
    every member except the lowest index is reported; the first occurrence is kept.
    Values beyond bands * rows (when bands does not divide n) are used for verification only.
    """
    if len(signatures) < 2:
        return {}
    sigs = np.vstack(signatures)
    n_docs, n_perm = sigs.shape
    bands = max(1, min(bands, n_perm))
    rows = n_perm // bands
    parent = list(range(n_docs))
    mixer = np.random.default_rng(12345).integers(1, 2**63, size=rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    for band in range(bands):
        block = sigs[:, band * rows : (band + 1) * rows].astype(np.uint64)
        with np.errstate(over="ignore"):
            keys = (block * mixer).sum(axis=1)  # 64-bit key per band; a collision only costs a verification
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
