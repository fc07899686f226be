"""The batch tokenization every filter rule shares: the same words as lower_words, hashed consistently."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.text.wordarrays import (
    ALPHA,
    CJK,
    CJK_CHARS,
    DECIMAL,
    DIGIT,
    LATIN,
    LETTER,
    SPACE,
    WORD,
    WordArrays,
    char_classes,
    hash_words,
    lower_words,
    positions,
    span_indexes,
    unique,
    word_hashes,
)

TRICKY = ["Hello, World! 你好世界 don’t stop", "", "İstanbul ½ x_y ABC123", "日本語のテキスト・カタカナ", "aaaaa",
          "  \n\t", "ﬁne café naïve ΣΟΦΟΣ", "nul\x00inside", "tab\tsep\x1cfile", "emoji 🙂 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]


def _check(texts: list[str]) -> None:
    words = WordArrays.from_texts(texts)
    assert words.n_docs == len(texts) and len(words.offsets) == len(texts) + 1
    for i, text in enumerate(texts):
        expected = lower_words(text).words
        span = words.words_of(i)
        assert words.lower[i] == text.lower()
        assert [words.lower[i][s : s + n] for s, n in zip(words.starts[span], words.lengths[span])] == expected
        assert (words.doc[span] == i).all()
        got = words.hashes[span]
        assert all(h in hash_words([w]) for h, w in zip(got, expected))
    assert words.per_doc().tolist() == [len(lower_words(t).words) for t in texts]


def test_words_equal_lower_words_on_tricky_texts():
    _check(TRICKY)
    _check(TRICKY[::-1])  # other neighbours: nothing leaks across documents
    _check([])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab Z9_,.\n\t'’-İΣß你好カ・\x00½🙂éẞ\u212a")), max_size=30),
                max_size=6))
def test_words_equal_lower_words_on_any_batch(texts: list[str]):
    _check(texts)


def test_every_code_point_lower_cases_as_str_lower():
    # Every character (lone surrogates too) in batches of texts, through the table; İ and Σ through str.lower.
    chars = "".join(chr(c) for c in range(0x110000) if c not in (0x130, 0x3A3))
    for texts in ([chars[i : i + 4099] for i in range(0, len(chars), 4099)], ["ΟΔΟΣ ΣΟΦΟΣ Σ", "İi KELVIN\u212a ẞ"]):
        words = WordArrays.from_texts(texts)
        expected = "\x00".join(t.lower() for t in texts)
        assert words.codes.tobytes() == expected.encode("utf-32-le", "surrogatepass")
        assert [words.lower[i] for i in (-1, 0, 1)] == [texts[i].lower() for i in (-1, 0, 1)]


def test_character_classes_are_the_regexes_on_every_plane():
    # One code point in 61 across all of Unicode (the planes above U+3FFFF are checked as a whole when the
    # table is built), plus a few that matter: each class flag is its regex or str method on that character.
    rules = [(WORD, r"[^\W_]"), (CJK, f"[{CJK_CHARS}]"), (SPACE, r"\s"), (LETTER, r"[^\W\d_]"),
             (LATIN, "[a-z\xdf-\xf6\xf8-\u024f]"), (DIGIT, "[0-9]"), (DECIMAL, r"\d")]
    table = char_classes()
    for cp in [*range(0, 0x110000, 61), 0x20, 0x3000, 0x4E00, 0x20000, 0x2A6D6, 0x3134A, 0xE0041, 0x10FFFD]:
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        want = sum(flag for flag, rx in rules if re.fullmatch(rx, ch)) | (ALPHA if ch.isalpha() else 0)
        assert table[cp] == want, hex(cp)


def test_equal_words_hash_equally_and_different_words_do_not():
    words = WordArrays.from_texts(["the cat and THE dog", "cat"])
    h = words.hashes
    assert h[0] == h[3] and h[1] == h[5] and len(set(h.tolist())) == 4
    table = hash_words(["the", "dog", "", "dog"])
    assert table.tolist() == sorted(table.tolist()) and len(table) == 2
    assert words.isin(table).tolist() == [True, False, False, True, True, False]
    assert words.per_doc(words.isin(table)).tolist() == [3, 0]


def _reference_hash(word: str) -> int:
    """The documented hash, in Python integers: sum((cp + 1) * P**j) + length * 0x9E3779B97F4A7C15, splitmix64."""
    mask = (1 << 64) - 1
    h = (sum((ord(c) + 1) * 0x100000001B3**j for j, c in enumerate(word)) + len(word) * 0x9E3779B97F4A7C15) & mask
    h ^= h >> 30
    h = h * 0xBF58476D1CE4E5B9 & mask
    h ^= h >> 27
    h = h * 0x94D049BB133111EB & mask
    return h ^ (h >> 31)


def test_hashes_follow_their_definition_in_short_and_long_batches():
    story = "Once upon a time a fox found a lantern. " * 60_000  # 2.4 M characters in one batch
    long = WordArrays.from_texts([story, "lantern fox 狐"])
    assert long.hashes[long.words_of(1)].tolist() == [_reference_hash(w) for w in ("lantern", "fox", "狐")]
    assert long.hashes[long.words_of(0)][:9].tolist() == long.hashes[long.words_of(0)][9:18].tolist()
    assert word_hashes(["Déjà", "x"]).tolist() == [_reference_hash("Déjà"), _reference_hash("x")]


def test_word_hashes_keep_order_and_span_indexes_concatenate_ranges():
    words = ["dog", "the", "dog"]
    assert word_hashes(words).tolist() == WordArrays.from_texts(["dog the dog"]).hashes.tolist()
    with pytest.raises(ValueError, match="non-empty words without NUL"):
        word_hashes(["dog", ""])
    assert span_indexes(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist() == [5, 6, 9, 10, 11]
    assert span_indexes(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)).tolist() == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=40), st.integers(1, 2**64 - 1))
def test_unique_is_numpy_unique(values, modulus):
    for dtype, keys in ((np.uint64, [v % modulus for v in values]),
                        (np.int64, [v % min(modulus, 2**63) - 2**40 for v in values])):
        array = np.array(keys, dtype=dtype)
        got = unique(array)
        assert got.dtype == array.dtype and got.tolist() == np.unique(array).tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 0x10FFFF), max_size=60), st.integers(1, 300), st.integers(1, 255))
def test_positions_are_the_flagged_code_points(codes, size, mask):
    table = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    cp = np.array(codes, dtype=np.uint32)
    expected = np.flatnonzero(np.take(table, cp, mode="clip") & mask)  # past the end: the last entry
    assert positions(cp, table, mask).tolist() == expected.tolist()
