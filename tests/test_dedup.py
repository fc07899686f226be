"""Exact keys, MinHash signatures (deterministic across processes) and LSH near-duplicate grouping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.text.dedup import _KEY_LANES, MinHasher, exact_key, exact_keys, near_duplicate_groups
from pipeline.text.wordarrays import WordArrays, lower_words, word_hashes

FOX = (
    "In the middle of the Birchwood there lived a small fox who was afraid of the dark. Every evening, when the "
    "sun went down behind the hills, she hurried home to her den and hid under a pile of leaves until morning. "
    "One autumn an old owl gave her a lantern made from a jam jar and a candle stub, and said: carry your own light."
)
BEAR = (
    "High in the hills above the village lived a beekeeper called Tomas and his eleven hives. Every summer a brown "
    "bear came down from the forest, knocked over a hive and ate the honey, and every summer Tomas shouted and "
    "banged a pot until it went away. In the seventh summer he left a bowl of honey at the edge of the forest instead."
)


def _edit(text: str, swaps: dict[str, str]) -> str:
    for old, new in swaps.items():
        text = text.replace(old, new, 1)
    return text


def test_exact_key_ignores_case_punctuation_and_whitespace():
    assert exact_key("The Fox, the Owl!\n\nAnd  the lantern.") == exact_key("the fox the owl and the LANTERN")
    assert exact_key("the fox") != exact_key("the box")
    assert len(exact_key("")) == 32 and int(exact_key("x"), 16) >= 0


def test_signature_shape_dtype_and_determinism():
    a, b = MinHasher(num_perm=64), MinHasher(num_perm=64)
    sig = a.signature(FOX)
    assert sig.shape == (64,) and sig.dtype == np.uint32
    assert np.array_equal(sig, b.signature(FOX))
    assert not np.array_equal(sig, MinHasher(num_perm=64, seed=2).signature(FOX))


def test_signature_is_the_same_in_another_process_with_another_hash_seed():
    code = ("import sys; from pipeline.text.dedup import MinHasher; "
            "print(MinHasher().signature(sys.argv[1]).tobytes().hex(), end='')")
    env = {"PYTHONHASHSEED": "12345", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", code, FOX], capture_output=True, text=True, check=True, env=env).stdout
    assert out == MinHasher().signature(FOX).tobytes().hex()


def _similarity(x: str, y: str, hasher: MinHasher = MinHasher()) -> float:
    return float(np.mean(hasher.signature(x) == hasher.signature(y)))


def test_estimated_similarity_tracks_edits():
    assert _similarity(FOX, FOX.upper().replace(",", "")) == 1.0  # case and punctuation are not shingles
    light = _edit(FOX, {"small": "little", "autumn": "winter"})
    heavy = _edit(FOX, {"small": "little", "autumn": "winter", "hurried": "ran", "old": "wise", "candle": "wick",
                        "hills": "trees", "leaves": "ferns", "morning": "dawn"})
    assert _similarity(FOX, light) > 0.6 > _similarity(FOX, heavy)
    assert _similarity(FOX, BEAR) < 0.1


def test_short_and_cjk_texts():
    hasher = MinHasher(shingle_size=5)
    assert np.array_equal(hasher.signature("Hello there!"), hasher.signature("hello, THERE"))  # one shingle
    assert not np.array_equal(hasher.signature("Hello there"), hasher.signature("Hello where"))
    poem = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
    assert _similarity(poem, poem.replace("霜", "雪")) > 0.5  # character shingles, not one "word"
    assert _similarity(poem, "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。") < 0.1


def test_near_duplicate_groups_keep_the_first_occurrence():
    hasher = MinHasher()
    docs = [FOX, BEAR, _edit(FOX, {"small": "little"}), "Something else entirely, about a boat and a gull.",
            _edit(BEAR, {"eleven": "twelve"}), FOX]
    groups = near_duplicate_groups([hasher.signature(d) for d in docs], bands=16, threshold=0.8)
    assert groups == {2: 0, 4: 1, 5: 0}


def test_threshold_is_verified_not_just_lsh_candidates():
    hasher = MinHasher()
    sigs = [hasher.signature(FOX), hasher.signature(_edit(FOX, {"small": "little", "autumn": "winter", "old": "wise"}))]
    similarity = float(np.mean(sigs[0] == sigs[1]))
    assert near_duplicate_groups(sigs, bands=32, threshold=min(1.0, similarity + 0.05)) == {}
    assert near_duplicate_groups(sigs, bands=32, threshold=similarity) == {1: 0}


def test_clusters_are_transitive_and_point_at_the_lowest_index():
    base = np.arange(128, dtype=np.uint32)
    b = base.copy()
    b[:20] += 1000  # ~84% equal to base
    c = b.copy()
    c[20:40] += 1000  # ~84% equal to b, ~69% to base
    groups = near_duplicate_groups([c, base, b], bands=16, threshold=0.8)
    assert groups == {1: 0, 2: 0}  # base joins through b; the representative is the lowest index


@pytest.mark.parametrize("sigs", [[], [np.zeros(128, dtype=np.uint32)]])
def test_trivial_inputs(sigs):
    assert near_duplicate_groups(sigs, bands=16, threshold=0.8) == {}


@pytest.mark.parametrize(("similarity", "low", "high"), [(0.5, 0.03, 0.10), (0.7, 0.55, 0.67), (0.8, 0.92, 0.98),
                                                         (0.9, 0.995, 1.0)])
def test_candidate_rate_follows_the_docstrings_s_curve_with_the_default_banding(similarity, low, high):
    """near_duplicate_groups with the config's banding makes pairs whose positions agree independently with
    probability s candidates at the docstring's rates (s=0.5 -> 6%, 0.7 -> 61%, 0.8 -> 95%, 0.9 -> 99.99%);
    a threshold near 0 turns every candidate into a duplicate, so the groups count the candidates."""
    from pipeline.config import DedupConfig

    cfg = DedupConfig()
    n_pairs = 3000
    rng = np.random.default_rng(7)
    first = rng.integers(1, 2**32, size=(n_pairs, cfg.num_perm), dtype=np.uint64).astype(np.uint32)
    other = rng.integers(1, 2**32, size=(n_pairs, cfg.num_perm), dtype=np.uint64).astype(np.uint32)
    second = np.where(rng.random((n_pairs, cfg.num_perm)) < similarity, first, other)
    sigs = np.empty((2 * n_pairs, cfg.num_perm), dtype=np.uint32)
    sigs[0::2], sigs[1::2] = first, second
    groups = near_duplicate_groups(sigs, bands=cfg.bands, threshold=1e-9)
    assert all(k % 2 == 1 and v == k - 1 for k, v in groups.items())  # only the planted pairs
    rate = len(groups) / n_pairs
    expected = 1 - (1 - similarity ** (cfg.num_perm // cfg.bands)) ** cfg.bands
    assert low <= expected <= high and low <= rate <= high, (rate, expected)


# --- batches -------------------------------------------------------------------------------------

BATCH = [FOX, "", "Hello there!", BEAR, "one two three four", "a b c d e", "床前明月光，疑是地上霜。", "  ...  ",
         FOX.upper(), "the bear and the fox " * 40, "x"]


def test_batch_signatures_equal_single_document_signatures():
    for hasher in (MinHasher(), MinHasher(num_perm=64, shingle_size=3, seed=7),
                   MinHasher(num_perm=200, shingle_size=1)):
        sigs = hasher.signatures(WordArrays.from_texts(BATCH))
        assert sigs.shape == (len(BATCH), hasher.num_perm) and sigs.dtype == np.uint32
        for text, row in zip(BATCH, sigs):  # shingles never cross documents; rows do not depend on the batch
            assert np.array_equal(row, hasher.signature(text))
        reordered = hasher.signatures(WordArrays.from_texts(BATCH[::-1]))
        assert np.array_equal(reordered[::-1], sigs)


def test_documents_without_words_and_short_documents():
    hasher = MinHasher()
    empty = hasher.signature("")
    assert np.array_equal(empty, hasher.signature(" ... !"))  # the fixed signature of a document without words
    assert np.all(empty == empty[0])  # one shingle (of zero words): every bin holds its value
    short = hasher.signatures(WordArrays.from_texts(["a b", "b a", "a b c", "a b c d", "a"]))
    assert np.all(short == short[:, :1])  # one shingle each
    assert len(set(short[:, 0].tolist()) | {int(empty[0])}) == 6  # order and length matter


def test_exact_keys_batch():
    variants = ["The Fox, the Owl!\n\nAnd  the lantern.", "the fox the owl and the LANTERN",
                "THE FOX -- THE OWL, AND ... THE\tLANTERN?"]
    others = ["the fox the owl and the", "the owl the fox and the lantern", "the fox the owl and the lantern lantern",
              "the fox the owl and thelantern", "", "...", "床前明月光", "床前明月 光"]
    keys = exact_keys(WordArrays.from_texts(variants + others))
    assert keys.dtype == np.dtype("S16") and keys.shape == (len(variants) + len(others),)
    assert len(set(keys[: len(variants)].tolist())) == 1
    assert len(set(keys.tolist())) == 1 + len(others) - 2  # two pairs below share keys
    assert keys[len(variants) + 4] == keys[len(variants) + 5]
    assert keys[len(variants) + 6] == keys[len(variants) + 7]  # CJK characters are words of their own
    for text, key in zip(variants + others, keys):
        assert exact_key(text) == key.ljust(16, b"\0").hex()


# --- estimates track the true shingle Jaccard ----------------------------------------------------


def _vocabulary(rng: np.random.Generator, n: int = 3000) -> list[str]:
    letters = list("abcdefghijklmnopqrstuvwxyz")
    return ["".join(rng.choice(letters, size=int(rng.integers(2, 9)))) for _ in range(n)]


def _true_jaccard(x: str, y: str, k: int = 5) -> float:
    def shingles(text: str) -> set[tuple[str, ...]]:
        words = lower_words(text).words
        return {tuple(words[i : i + k]) for i in range(len(words) - k + 1)} if len(words) >= k else {tuple(words)}
    a, b = shingles(x), shingles(y)
    return len(a & b) / len(a | b)


def test_estimated_jaccard_tracks_true_shingle_jaccard():
    rng = np.random.default_rng(3)
    vocab = _vocabulary(rng)
    draw = lambda n: [vocab[i] for i in rng.integers(0, len(vocab), n)]  # noqa: E731
    pairs = []
    for _ in range(50):
        a = draw(int(rng.integers(200, 600)))
        b = list(a)
        for p in np.flatnonzero(rng.random(len(b)) < rng.random() * 0.1):  # replace up to 10% of the words
            b[p] = vocab[rng.integers(len(vocab))]
        cut = int(rng.integers(0, len(a) // 3))
        b = b[cut:] if rng.random() < 0.5 else b + draw(cut)  # and drop or add up to a third
        pairs += [" ".join(a), " ".join(b)]
    sigs = MinHasher().signatures(WordArrays.from_texts(pairs))
    estimate = (sigs[0::2] == sigs[1::2]).mean(axis=1)
    truth = np.array([_true_jaccard(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)])
    assert truth.min() < 0.4 and truth.max() > 0.9  # a spread of similarities
    assert np.abs(estimate - truth).mean() < 0.05
    assert abs((estimate - truth).mean()) < 0.02  # unbiased


def test_short_documents_detect_near_copies():
    rng = np.random.default_rng(5)
    vocab = _vocabulary(rng)
    texts = []
    for _ in range(40):
        words = [vocab[i] for i in rng.integers(0, len(vocab), int(rng.integers(20, 41)))]
        copy = words[:-1] + [vocab[rng.integers(len(vocab))]] if rng.random() < 0.5 else words + ["extra"]
        texts += [" ".join(words), " ".join(copy)]
    truth = [_true_jaccard(texts[i], texts[i + 1]) for i in range(0, len(texts), 2)]
    assert min(truth) >= 0.88 and np.mean(truth) > 0.9
    groups = near_duplicate_groups(MinHasher().signatures(WordArrays.from_texts(texts)), bands=16, threshold=0.8)
    found = sum(groups.get(i + 1) == i for i in range(0, len(texts), 2))
    assert found >= 38  # of 40 copies
    assert all(dropped % 2 == 1 and rep == dropped - 1 for dropped, rep in groups.items())  # nothing else


_MASK = (1 << 64) - 1


def _mix(h: int) -> int:
    h ^= h >> 30
    h = h * 0xBF58476D1CE4E5B9 & _MASK
    h ^= h >> 27
    h = h * 0x94D049BB133111EB & _MASK
    return h ^ (h >> 31)


def _reference_signature(hasher: MinHasher, text: str) -> list[int]:
    """The documented signature in Python integers: shingle hashes, one bin each by the top 32 bits of the
    mixed hash, the least low 32 bits per bin, then each empty bin from the first full one in its probe order."""
    h = [int(x) for x in word_hashes(lower_words(text).words)] if lower_words(text).words else []
    k, K = hasher.shingle_size, hasher.num_perm
    position = [int(p) for p in hasher._position]
    runs = [h[i : i + k] for i in range(len(h) - k + 1)] if len(h) >= k else [h]
    bins: dict[int, int] = {}
    for run in runs:
        y = _mix((sum(w * p for w, p in zip(run, position)) + len(run) * int(hasher._length_tag)) & _MASK
                 ^ int(hasher._mix_seed))
        cell = (y >> 32) * K >> 32
        bins[cell] = min(bins.get(cell, 1 << 32), y & 0xFFFFFFFF)
    order = hasher._probe_orders()[0]
    return [bins[next(b for b in order[j].tolist() if b in bins)] for j in range(K)]


def test_signatures_and_exact_keys_follow_their_definitions():
    texts = [FOX, BEAR, "the fox", "", "a b c d e", "狐狸 fox 狐"]
    hasher = MinHasher(num_perm=64, shingle_size=3)
    assert hasher.signatures(WordArrays.from_texts(texts)).tolist() == [_reference_signature(hasher, t) for t in texts]

    for text, key in zip(texts, exact_keys(WordArrays.from_texts(texts))):
        h = [int(x) for x in word_hashes(lower_words(text).words)] if lower_words(text).words else []
        lanes = [_mix((sum(_mix((w + (i + 1) * int(g)) & _MASK) for i, w in enumerate(h))
                       + len(h) * int(c) + int(s)) & _MASK)
                 for g, c, s in _KEY_LANES]
        assert key == b"".join(lane.to_bytes(8, "little") for lane in lanes).rstrip(b"\0")
