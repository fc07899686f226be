"""Document quality rules for the filter stage: Gopher-style word and repetition rules, C4/FineWeb line rules.

`quality_reason(text, cfg)` returns the name of the first failing rule, or None to keep the text.
Rules, in the order they are checked (thresholds and their provenance live in `QualityConfig`):

    too_few_words, too_many_words   word count (CJK ideographs, kana and hangul count one word each)
    short_words, long_words         mean length of letter-bearing words (skipped for CJK-dominant text)
    symbols                         '#' and ellipses per word
    non_alpha                       share of words with a letter; punctuation-only tokens are not words
    no_stopwords                    Latin-script text without any function word (keyboard mash, word salad)
    repeated_lines                  share of lines that repeat an earlier line (poetry allows refrains)
    repeated_ngrams                 share of word characters inside the most frequent word 2-gram
    lines_no_terminal_punct, bullet_lines, lines_ellipsis, short_lines      profile 'web' only

Unlike word-tokenizer based implementations, a token such as "—" or "..." is never a word here,
so punctuation-rich dialogue and verse are not mistaken for non-alphabetic junk.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import filterfalse, islice
from operator import mul

from pipeline.config import QualityConfig
from pipeline.textclean import CJK_CHARS, FUNCTION_WORDS, lower_words

_CJK = re.compile(f"[{CJK_CHARS}]")
_NO_ALNUM_LINE = re.compile(r"^(?:[^\w\n]|_)+$", re.M)  # a token without letters or digits
_LETTER_LINE = re.compile(r"^[^\n]*?[^\W\d_]", re.M)  # a token with a letter (one match per line)
_LATIN_WORD = re.compile("[a-z\xdf-\xf6\xf8-\u024f]+")
# Elision stubs ("l'", "qu'") are function words only before an apostrophe: a lone "l" is not one.
_STOPWORDS = frozenset(w for words in FUNCTION_WORDS.values() for w in words if len(w) > 1 or w in "aiyoeà")
_FEW_WORDS = 50  # below this a single function word is enough (short poems are terse)

_TERMINAL = (".", "!", "?", '"', "'", "”", "’", ")", "…", ":", ";", "»", "」", "』", "。", "！", "？")
_BULLETS = ("•", "-", "*", "·", "‣", "▪", "●", "◦", "–", "—", "➤", "►", "✓", "✔", "→", "○", "■", "□")
_ELLIPSES = ("...", "…")


def _token_stats(text: str, has_cjk: bool) -> tuple[int, int, int, int]:
    """(words, letter-bearing words, CJK characters, digits outside purely alphabetic tokens).

    A word is a whitespace token holding a letter or digit, and each CJK character is one word.
    Purely alphabetic tokens (most of them) are counted in C; the others are joined one per line and
    classified by two regex scans instead of a Python loop.
    """
    n_cjk = 0
    if has_cjk:
        text, n_cjk = _CJK.subn(" ", text)
    tokens = text.split()
    others = "\n".join(filterfalse(str.isalpha, tokens))  # "word,", "—", "1999", "don't"
    no_alnum = len(_NO_ALNUM_LINE.findall(others))
    with_letter = len(_LETTER_LINE.findall(others))
    n_alpha_only = len(tokens) - others.count("\n") - 1 if others else len(tokens)
    digits = sum(map(others.count, "0123456789"))
    return len(tokens) - no_alnum + n_cjk, n_alpha_only + with_letter + n_cjk, n_cjk, digits


def count_words(text: str) -> int:
    """Whitespace tokens holding a letter or digit, plus one per CJK ideograph/kana/hangul syllable."""
    return _token_stats(text, not text.isascii() and _CJK.search(text) is not None)[0]


def _lacks_stopwords(words: list[str], n_words: int, cfg: QualityConfig) -> bool:
    """Latin-script text with fewer function words than a real sentence in any of our languages has."""
    needed = min(cfg.min_stopwords, 1 if n_words < _FEW_WORDS else cfg.min_stopwords)
    hits = 0
    for word in words:  # stops at the first few function words, so ordinary text costs little
        if word in _STOPWORDS:
            hits += 1
            if hits >= needed:
                return False
    latin = sum(1 for w in words if _LATIN_WORD.fullmatch(w))
    return needed > 0 and latin >= 0.5 * len(words)  # other scripts have no function-word lists here


def _dup_line_ratio(lines: list[str]) -> float:
    return 1 - len(set(lines)) / len(lines) if len(lines) > 1 else 0.0


def _top_bigram_ratio(words: list[str], limit: float) -> float:
    """Gopher's top-n-gram rule for n=2: share of word characters inside the most frequent 2-gram.

    A 2-gram (a, b) occurring c times has c <= count(a) and c <= count(b), so its share is at most
    share(a) + share(b): unless some single word covers more than limit/2 of the characters, no
    2-gram can exceed `limit` and the (expensive) 2-gram count is skipped.
    """
    total = sum(map(len, words))
    counts = Counter(words)
    if max(map(mul, counts.values(), map(len, counts))) <= limit / 2 * total:
        return 0.0
    (first, second), n = Counter(zip(words, islice(words, 1, None))).most_common(1)[0]
    return n * (len(first) + len(second)) / total


def _web_line_reason(lines: list[str], cfg: QualityConfig) -> str | None:
    n = len(lines)
    if sum(1 for ln in lines if not ln.endswith(_TERMINAL)) / n > cfg.max_no_terminal_punct_ratio:
        return "lines_no_terminal_punct"
    if sum(1 for ln in lines if ln.startswith(_BULLETS)) / n > cfg.max_bullet_line_ratio:
        return "bullet_lines"
    if sum(1 for ln in lines if ln.endswith(_ELLIPSES)) / n > cfg.max_ellipsis_line_ratio:
        return "lines_ellipsis"
    if sum(1 for ln in lines if len(ln) < cfg.short_line_chars) / n > cfg.max_short_line_ratio:
        return "short_lines"
    return None


def quality_reason(text: str, cfg: QualityConfig) -> str | None:
    """Name of the first failing quality rule, or None when the text passes them all."""
    n_words, n_alpha, n_cjk, digits = _token_stats(text, lower_words(text).has_cjk)
    if n_words < cfg.min_words:
        return "too_few_words"
    if n_words > cfg.max_words:
        return "too_many_words"

    words = lower_words(text).words  # letter/digit runs, each CJK character separate
    cjk_dominant = n_cjk > n_alpha - n_cjk
    if n_alpha > n_cjk and not cjk_dominant:  # a CJK "word" is one character: mean length means nothing
        # Letters per letter-bearing word: punctuation, apostrophes and digits do not count.
        mean_len = (len("".join(words)) - digits - n_cjk) / (n_alpha - n_cjk)
        if mean_len < cfg.min_mean_word_len:
            return "short_words"
        if mean_len > cfg.max_mean_word_len:
            return "long_words"
    if (text.count("#") + text.count("...") + text.count("…")) / n_words > cfg.max_symbol_ratio:
        return "symbols"
    if n_alpha / n_words < cfg.min_alpha_word_ratio:
        return "non_alpha"
    if not cjk_dominant and _lacks_stopwords(words, n_words, cfg):
        return "no_stopwords"

    lines = [s for ln in text.split("\n") if (s := ln.strip())]
    max_dup = cfg.max_dup_line_ratio_poetry if cfg.profile == "poetry" else cfg.max_dup_line_ratio
    if _dup_line_ratio(lines) > max_dup:
        return "repeated_lines"
    if len(words) >= max(2, cfg.ngram_min_words) and _top_bigram_ratio(words, cfg.max_top_ngram_ratio) > cfg.max_top_ngram_ratio:
        return "repeated_ngrams"
    if cfg.profile == "web" and lines:
        return _web_line_reason(lines, cfg)
    return None
