"""clean_texts: the clean stage's batch form of `normalize.clean_text`, with a vectorised scan that
finds the few documents clean_text could change.

    clean_texts(texts, cfg) == [clean_text(t, cfg) for t in texts]      exactly (property-tested)

One pass of array operations over the batch's code points flags a document when it holds anything a
step of clean_text acts on: such a character, a mojibake lead + continuation pair, text not in the
configured Unicode form, trailing or repeated spaces, three newlines, a leading or trailing newline,
"***", a boilerplate hint, a short line the UI-line rule could remove, or a table of contents. Only flagged documents go
through clean_text; the rest come back as the same objects (on book paragraphs, ~4 % are flagged).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from itertools import chain
from typing import NamedTuple

import numpy as np
from numba import njit

from pipeline.config import CleanConfig
from pipeline.text.normalize import (
    CONT,
    CONTENTS,
    HINT_WORDS,
    TOC_RUN,
    UI_LINE,
    UI_MAX_CHARS,
    clean_text,
    is_boilerplate,
    is_ui_line,
)
from pipeline.text.wordarrays import code_points, unique

# Every character some step of clean_text acts on: _UNUSUAL, _INVISIBLE, _C1, _NEWLINE (with "\r") and
# _ODD_SPACE, except the Latin-1 letters \xc2-\xf4 of _UNUSUAL: only mojibake repair acts on those, and only
# when a continuation character follows (_LEAD_CONT), which is tested on its own. Also 'İ' (lower-cases to
# two characters) and the Kelvin sign (lower-cases to ASCII 'k'), which the hint search below does not fold.
_CHANGEABLE_CHAR = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\xa0\xad\u0130\u1680\u180e\u2000-\u200b\u200e\u200f\u2028\u2029\u202a-\u202f"
    "\u205f-\u2064\u2066-\u2069\u212a\ufeff\ufdd0-\ufdef\ufffe\uffff\ud800-\udfff]"
)
# Class bits of the BMP code points (every character above is in the BMP).
_CHANGE, _LEAD, _CONT_BIT, _HINT_CHAR, _RUN_SPACE, _TRAIL_SPACE = 1, 2, 4, 8, 16, 32
# Line starts of a candidate UI line ("\n" then the UI_LINE words alone on their line, lower-cased text);
# is_ui_line then decides exactly. UI_LINE's suffix class [\s.:!»›>] without "\n" keeps a match on its line.
_UI_BODY = UI_LINE.pattern.replace("[\\s.:!»›>]*", "(?:[^\\S\n]|[.:!»›>])*")
assert _UI_BODY != UI_LINE.pattern
_UI_CANDIDATE = re.compile(f"\n[^\\S\n]*{_UI_BODY}(?=\n|\\Z)")


@lru_cache(maxsize=1)
def _char_bits() -> np.ndarray:
    """uint8 class bits for U+0000..U+FFFF, and 0 at index 0x10000 (where astral code points are clipped)."""
    bmp = "".join(map(chr, range(0x10000)))
    bits = np.zeros(0x10001, dtype=np.uint8)
    for bit, rx in ((_CHANGE, _CHANGEABLE_CHAR), (_LEAD, re.compile("[\xc2-\xf4]")), (_CONT_BIT, re.compile(CONT)),
                    (_RUN_SPACE, re.compile("[ \t]")), (_TRAIL_SPACE, re.compile("[ \t\u3000]"))):
        for m in rx.finditer(bmp):
            bits[m.start()] |= bit
    singles = {w for w in HINT_WORDS if len(w) == 1}
    bits[[i for i, ch in enumerate(bmp) if ch.lower() in singles]] |= _HINT_CHAR
    return bits


class _HintTable(NamedTuple):
    """The hints of 2+ characters (all ASCII), for `_hint_starts`: each is keyed by its least common trigram
    (a 21-bit key of three case-folded code points, see `_fold`), and `slot[key]` (-1: none) numbers the
    keys; key k stands for the hints [first[k], first[k + 1]), hint h spelled chars[start[h]:start[h] +
    length[h]] (folded) with the key's trigram at `offset[h]` in it."""

    slot: np.ndarray
    first: np.ndarray
    start: np.ndarray
    length: np.ndarray
    offset: np.ndarray
    chars: np.ndarray


@njit(inline="always")
def _fold(c):
    """ASCII letters case-folded into 7 bits (other characters may fold onto them: a key only nominates)."""
    return (c | 0x20) & 0x7F


@lru_cache(maxsize=1)
def _hint_table() -> _HintTable:
    rare = {c: i for i, c in enumerate("etaoinshrdlcumwfgypbvkjxqz")}  # English letters, most common first
    rare[" "] = -20  # word boundaries ("ur ", " th") are the most common trigrams
    by_key: dict[int, list[tuple[str, int]]] = {}
    fold = _fold.py_func  # the same folding in Python (calling the compiled one would compile it here)
    for word in HINT_WORDS:
        if len(word) < 2:
            continue
        assert word.isascii() and word == word.lower(), word
        padded = word if len(word) >= 3 else word + "\x00"  # (no 2-character hint today)
        at = max(range(len(padded) - 2), key=lambda i: sum(rare.get(c, 30) for c in padded[i : i + 3]))
        a, b, c = (fold(ord(ch)) for ch in padded[at : at + 3])
        by_key.setdefault((a << 14) | (b << 7) | c, []).append((word, at))
    assert len(by_key) < 128, "slot numbers are int8"
    slot = np.full(1 << 21, -1, dtype=np.int8)
    first, start, length, offset, chars = [0], [], [], [], []
    for k, (key, spelled) in enumerate(by_key.items()):
        slot[key] = k
        for word, at in spelled:
            start.append(len(chars))
            chars += [fold(ord(ch)) for ch in word]
            length.append(len(word))
            offset.append(at)
        first.append(len(start))
    return _HintTable(slot, *(np.array(v, dtype=np.int64) for v in (first, start, length, offset)),
                      np.array(chars, dtype=np.uint32))


@njit(cache=True, nogil=True)
def _hint_starts(cp, slot, first, start, length, offset, chars):
    """Start positions in `cp` of the hints of `_HintTable` (ASCII case folded), in one pass over the trigrams:
    a trigram with a slot nominates its hints, each compared whole where it would start. Unsorted, and a
    position may come twice (hints sharing a start)."""
    n = len(cp)
    if n < 3:
        return np.empty(0, np.int64)
    most = 0  # hints one trigram nominates
    for k in range(len(first) - 1):
        most = max(most, first[k + 1] - first[k])
    out = np.empty((n - 2) * most, np.int64)  # as in wordarrays.positions: only the pages written to are touched
    m = 0
    a, b = _fold(cp[0]), _fold(cp[1])
    for p in range(n - 2):
        c = _fold(cp[p + 2])
        k = slot[(a << 14) | (b << 7) | c]
        a, b = b, c
        if k < 0:
            continue
        for h in range(first[k], first[k + 1]):
            at = p - offset[h]
            if at < 0 or at + length[h] > n:
                continue
            same = True
            for j in range(length[h]):
                if _fold(cp[at + j]) != chars[start[h] + j]:
                    same = False
                    break
            if same:
                out[m] = at
                m += 1
    return out[:m].copy()


def _flag_positions(flags: np.ndarray, starts: np.ndarray, positions: np.ndarray) -> None:
    if len(positions):
        flags[np.searchsorted(starts, positions, side="right") - 1] = True


def _changeable(texts: list[str], cfg: CleanConfig) -> list[bool]:
    """For each text, whether `clean_text(text, cfg)` might differ from it: True for every text it changes
    (a strict superset; property tests hold it to that). The documents are joined by "\n" and scanned as
    numpy arrays of code points, so the cost per document is a few array elements, not Python calls."""
    n = len(texts)
    if n == 0:
        return []
    text = "\n".join(texts)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=starts[1:])  # starts[n] is one past the end
    flags = np.zeros(n, dtype=bool)
    cp = code_points(text)
    bits = _char_bits().take(cp, mode="clip")
    nl = cp == 10
    # Characters: "\r", controls, invisible characters, odd spaces, C1 and the soft hyphen; mojibake.
    _flag_positions(flags, starts, np.flatnonzero(bits & _CHANGE))
    if cfg.fix_mojibake and not text.isascii():
        _flag_positions(flags, starts, np.flatnonzero(((bits[:-1] & _LEAD) != 0) & ((bits[1:] & _CONT_BIT) != 0)))
    if cfg.unicode_form != "none" and not text.isascii() and not unicodedata.is_normalized(cfg.unicode_form, text):
        # Joining by "\n" (a starter that composes with nothing) keeps each document's normal form apart.
        flags |= [not unicodedata.is_normalized(cfg.unicode_form, t) for t in texts]
    # Whitespace: a space/tab/ideographic space ending a line; a run of spaces and tabs (two or more, or a
    # tab) inside a line, not at its start (indentation is kept); edges and blank-line runs.
    trail = (bits & _TRAIL_SPACE) != 0
    _flag_positions(flags, starts, np.flatnonzero(trail[:-1] & nl[1:]))
    flags[-1] |= bool(trail[-1]) if len(trail) else False
    run = (bits & _RUN_SPACE) != 0
    wide = cp[1:] == 9
    wide[:-1] |= run[2:]
    _flag_positions(flags, starts, np.flatnonzero(run[1:] & ~run[:-1] & ~nl[:-1] & wide) + 1)
    _flag_positions(flags, starts, np.flatnonzero(nl[:-2] & nl[1:-1] & nl[2:]))
    filled = lengths > 0
    flags[filled] |= nl[starts[:-1][filled]] | nl[(starts[1:] - 2)[filled]]
    if cfg.strip_boilerplate:
        star = cp == 42  # "***": Project Gutenberg START/END markers
        _flag_positions(flags, starts, np.flatnonzero(star[:-2] & star[1:-1] & star[2:]))
        _flag_boilerplate_lines(text, cp, bits, nl, starts, flags)
        # Tables of contents, matched after a "\n" (so at text[m.start()] on): a match may run over the "\n"
        # joining two documents, so each one it touches is flagged.
        padded = "\n" + text
        for m in chain(CONTENTS.finditer(padded), TOC_RUN.finditer(padded)):
            first, last = np.searchsorted(starts, [m.start(), max(m.start(), m.end() - 2)], side="right") - 1
            flags[first : last + 1] = True
    return flags.tolist()


def _flag_boilerplate_lines(text: str, cp: np.ndarray, bits: np.ndarray, nl: np.ndarray, starts: np.ndarray,
                            flags: np.ndarray) -> None:
    """Flag documents with a line that _strip_boilerplate removes, testing each candidate line exactly:
    a line holding a hint (single characters by their class bit, the others by `_hint_starts`) that
    is_boilerplate removes, or a short line that is_ui_line removes."""
    line_ends = np.flatnonzero(nl)
    checked: set[tuple[int, bool]] = set()  # (line start, as a UI line)

    def removes(at: int, doc: int, test) -> None:
        if flags[doc]:
            return
        begin = text.rfind("\n", 0, at) + 1
        if (begin, test is is_ui_line) in checked:
            return
        checked.add((begin, test is is_ui_line))
        end = text.find("\n", at)
        if test(text[begin : len(text) if end == -1 else end]):
            flags[doc] = True

    found = [np.flatnonzero(bits & _HINT_CHAR), _hint_starts(cp, *_hint_table())]
    # Only the line matters: is_boilerplate on it is the exact test (a false hint only costs a test).
    hint_at = unique(np.concatenate(found))
    docs = np.searchsorted(starts, hint_at, side="right") - 1
    keep = ~flags[docs]
    for at, doc in zip(hint_at[keep].tolist(), docs[keep].tolist()):
        removes(at, doc, is_boilerplate)
    # UI lines are short: only lines of <= UI_MAX_CHARS characters go through the candidate regex.
    line_starts = np.r_[0, line_ends + 1]
    line_stops = np.r_[line_ends, len(text)]
    short = np.flatnonzero(line_stops - line_starts <= UI_MAX_CHARS)
    if len(short):
        begins, stops = line_starts[short], line_stops[short]
        lines = [text[a:b] for a, b in zip(begins.tolist(), stops.tolist())]
        joined = "\n" + "\n".join(lines).lower()
        sizes = stops - begins
        if len(joined) != int(sizes.sum()) + len(lines):  # 'İ' grows when lower-cased: lines one by one
            lines = [line.lower() for line in lines]
            joined = "\n" + "\n".join(lines)
            sizes = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
        offsets = np.zeros(len(lines) + 1, dtype=np.int64)  # where each line's "\n" is in `joined`
        np.cumsum(sizes + 1, out=offsets[1:])
        found = np.array([m.start() for m in _UI_CANDIDATE.finditer(joined)], dtype=np.int64)
        at = begins[np.searchsorted(offsets, found, side="right") - 1]
        for begin, doc in zip(at.tolist(), (np.searchsorted(starts, at, side="right") - 1).tolist()):
            removes(begin, doc, is_ui_line)


def clean_texts(texts: list[str], cfg: CleanConfig) -> list[str]:
    """`[clean_text(t, cfg) for t in texts]`, exactly, but only documents it could change go through
    clean_text; the others come back as the same objects. Most documents need no change, and the
    per-document Python calls are what cost on short documents (book paragraphs)."""
    flags = _changeable(texts, cfg)
    return [clean_text(t, cfg) if flag else t for t, flag in zip(texts, flags)]
