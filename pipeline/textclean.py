"""Text normalisation and language identification for the clean stage (pure functions, no I/O).

`clean_text` repairs mojibake, normalises Unicode, removes invisible and control characters,
tidies whitespace while keeping line and stanza breaks, and drops web/Gutenberg boilerplate
lines. It is idempotent and never raises for any `str`; its output always encodes as UTF-8.
`detect_language` is an offline script + function-word identifier. `lower_words` is the one
tokenization the filter-stage modules share (quality, toxicity, dedup), cached per text object.

Speed matters (the clean+filter+dedup target is >= 5 MB/s per core), so every step is a
precompiled regex or a C-level str method guarded by a cheap test that skips it for text that
cannot need it (ASCII text skips mojibake repair and normalisation, and so on).
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from pipeline.config import CleanConfig

# --- mojibake: UTF-8 bytes that were decoded as cp1252 / latin-1 --------------------------------

# Each byte 0x80-0xff as a character in either wrong decoding (cp1252 puts punctuation at 0x80-0x9f,
# latin-1 puts C1 controls there; both agree on 0xa0-0xff).
_BYTE_OF = {chr(b): b for b in range(0x80, 0x100)}
for _b in range(0x80, 0xA0):
    try:
        _BYTE_OF[bytes([_b]).decode("cp1252")] = _b
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d are unassigned in cp1252
        pass
_CONT = "[" + "".join(re.escape(c) for c, b in _BYTE_OF.items() if b < 0xC0) + "]"
# A well-formed UTF-8 multi-byte sequence spelled in those characters: lead byte + continuations.
# "â€" alone is the right double quote whose third byte (0x9d, unassigned in cp1252) got lost.
_MOJIBAKE = re.compile(f"[\xf0-\xf4]{_CONT}{{3}}|[\xe0-\xef]{_CONT}{{2}}|[\xc2-\xdf]{_CONT}|\xe2\u20ac\ufffd?")
_LOST_QUOTE = "\xe2\u20ac"
_LEAD_CONT = re.compile(f"[\xc2-\xf4]{_CONT}")  # every candidate above starts like this


# Where a weak two-character repair may land: Latin, Greek, Cyrillic, Hebrew, Arabic (not IPA, NKo...).
_PLAUSIBLE = re.compile("[\xa0-\u024f\u0370-\u052f\u0590-\u06ff]")


def _decode(seq: str) -> str | None:
    """The text the bytes behind `seq` really spelled, or None when that is not plausible."""
    if seq.rstrip("\ufffd") == _LOST_QUOTE:
        return "\u201d"
    try:
        fixed = bytes(_BYTE_OF[c] for c in seq).decode("utf-8")
    except UnicodeDecodeError:
        return None
    # A decoded C1 control is no improvement: the sequence was probably real text.
    return None if "\x80" <= fixed <= "\x9f" else fixed


def _is_strong(seq: str) -> bool:
    # 3- and 4-byte sequences and 'Â'/'Ã' + continuation essentially never occur in real text;
    # two-character sequences like 'É»' or 'ß…' do ("CAFÉ»", "Fuß…"), so they are only
    # repaired in a document that already shows strong evidence of mojibake.
    return len(seq) >= 3 or seq[0] in "\xc2\xc3" or seq == _LOST_QUOTE


def _repair_mojibake(text: str) -> str:
    if not _LEAD_CONT.search(text):  # fast path: a single-class scan instead of the 4-branch pattern
        return text
    found = [m.group() for m in _MOJIBAKE.finditer(text)]
    if not found:
        return text
    evidence = any(_is_strong(s) and _decode(s) is not None for s in found)

    def fix(m: re.Match) -> str:
        seq = m.group()
        if _is_strong(seq):
            fixed = _decode(seq)
        else:  # weak: needs evidence elsewhere and must land in a script that plausibly follows
            fixed = _decode(seq) if evidence else None
            fixed = fixed if fixed is not None and _PLAUSIBLE.match(fixed) else None
        return seq if fixed is None else fixed

    return _MOJIBAKE.sub(fix, text)


# --- characters and whitespace ----------------------------------------------------------------------

# C0 controls except \t \n \v \f \r, DEL, zero-width space/word joiner, BOM, bidi overrides and
# marks, noncharacters and lone surrogates (which could not be written as UTF-8). ZWJ/ZWNJ stay:
# they change meaning in emoji sequences and Persian/Indic words.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069"
    "\ufeff\ufdd0-\ufdef\ufffe\uffff\ud800-\udfff]"
)
_NEWLINE = re.compile("\r\n?|[\x0b\x0c\u2028\u2029]")
# C1 controls and the soft hyphen: removed only after mojibake repair, which needs them.
_C1 = re.compile("[\x80-\x9f\xad]")
# Any character that one of the repairs below acts on: one scan lets ordinary text skip four.
_UNUSUAL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\xc2-\xf4\u180e\u200b\u200e\u200f\u2028\u2029\u202a-\u202e"
    "\u2060-\u2064\u2066-\u2069\ufeff\ufdd0-\ufdef\ufffe\uffff\ud800-\udfff]"
)
_ODD_SPACE = re.compile("[\xa0\u1680\u2000-\u200a\u202f\u205f]")
_TRAILING = re.compile("[ \t\u3000]+(?=\n|$)")
_SPACE_RUN = re.compile(r"[ \t]{2,}|\t")
_BLANK_RUN = re.compile(r"\n{3,}")


def _normalize(text: str, form: str) -> str:
    if form == "none" or text.isascii() or unicodedata.is_normalized(form, text):
        return text
    return unicodedata.normalize(form, text)


def _tidy_whitespace(text: str) -> str:
    if not text.isascii():
        text = _ODD_SPACE.sub(" ", text)
    if " \n" in text or "\t" in text or text.endswith((" ", "\u3000")) or "\u3000\n" in text:
        text = _TRAILING.sub("", text)
    if "  " in text or "\t" in text:

        def collapse(m: re.Match) -> str:
            start = m.start()  # leading indentation (poems) is kept, inner runs become one space
            return m.group() if start == 0 or text[start - 1] == "\n" else " "

        text = _SPACE_RUN.sub(collapse, text)
    return text


# --- boilerplate lines ----------------------------------------------------------------------------

_LEXICONS = Path(__file__).parent / "lexicons"
_UI_MAX_CHARS = 40  # a button or menu label is short
_PHRASE_MAX_CHARS = 300  # a longer line is a real paragraph that merely mentions a keyword


def _load_boilerplate() -> tuple[tuple[str, ...], re.Pattern, re.Pattern]:
    """(hint substrings, whole-line UI regex, phrase regex) from lexicons/boilerplate.txt."""
    rows: dict[str, list[str]] = {"hint": [], "ui": [], "phrase": []}
    for line in (_LEXICONS / "boilerplate.txt").read_text(encoding="utf-8").split("\n"):
        if line and not line.startswith("#"):
            kind, value = line.split("\t", 1)
            rows[kind].append(value.split("\t")[-1])  # a phrase's name column is documentation
    hints = tuple(rows["hint"])
    ui = re.compile("(?:" + "|".join(rows["ui"]) + r")[\s.:!»›>]*")
    phrase = re.compile("|".join(f"(?:{p})" for p in rows["phrase"]))
    return hints, ui, phrase


# Hints are found with `in` and str.find (C substring search): a regex alternation of 30 words
# scans ~10x slower. Only lines holding a hint are tested against the phrase and nav-bar rules.
_HINT_WORDS, _UI_LINE, _PHRASE = _load_boilerplate()
_NEWLINE_CHAR = re.compile("\n")
_NAV_SEP = re.compile(r"\s*[|•·»›]\s*|\s+>\s+")
_PG_START = re.compile(r"^\*{3} ?start of (?:this|the) project gutenberg.*$", re.I | re.M)
_PG_END = re.compile(r"^\*{3} ?end of (?:this|the) project gutenberg.*$", re.I | re.M)


def _is_nav_bar(line: str) -> bool:
    """'Home | About | Contact': three or more short items (<= 4 words) between menu separators."""
    items = [p for p in _NAV_SEP.split(line) if p]
    return len(items) >= 3 and all(len(p) <= 30 and p.count(" ") <= 3 and p[-1] not in ".!?,;" for p in items)


def _is_boilerplate(line: str) -> bool:
    """For a line holding a hint: placeholder or licence text at any length, else a short phrase or menu."""
    low = line.strip().lower()
    if "lorem ipsum" in low or "project gutenberg" in low:
        return True
    return len(low) <= _PHRASE_MAX_CHARS and bool(_PHRASE.search(low) or _is_nav_bar(low))


def _cut_gutenberg(text: str) -> str:
    """Only the book between the Project Gutenberg START/END markers is text; header and licence are not."""
    if starts := list(_PG_START.finditer(text)):
        text = text[starts[-1].end() :]
    if end := _PG_END.search(text):
        text = text[: end.start()]
    return text


def _hinted_lines(low: str) -> set[int]:
    """Indexes of the lines that hold a hint substring (found by C substring search, not per line)."""
    present = [word for word in _HINT_WORDS if word in low]
    if not present:
        return set()
    newlines = [m.start() for m in _NEWLINE_CHAR.finditer(low)]
    found = set()
    for word in present:
        at = low.find(word)
        while at != -1:
            found.add(bisect_right(newlines, at))
            at = low.find(word, at + 1)
    return found


def _strip_boilerplate(text: str) -> str:
    if "***" in text:
        text = _cut_gutenberg(text)
    hinted = _hinted_lines(text.lower())  # lower() keeps every "\n", so line indexes agree
    lines = text.split("\n")
    kept = [
        ln
        for i, ln in enumerate(lines)
        if not (len(ln) <= _UI_MAX_CHARS and _UI_LINE.fullmatch(ln.strip().lower()) or i in hinted and _is_boilerplate(ln))
    ]
    return text if len(kept) == len(lines) else "\n".join(kept)


# --- clean_text --------------------------------------------------------------------------------------


def _clean_once(text: str, cfg: CleanConfig) -> tuple[str, bool]:
    """One pass; also says whether it changed anything that could expose new mojibake."""
    exposed = False
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if (not text.isascii() or _INVISIBLE.search(text)) and _UNUSUAL.search(text):
        if (stripped := _INVISIBLE.sub("", text)) != text:
            text, exposed = stripped, True
        if _NEWLINE.search(text):
            text = _NEWLINE.sub("\n", text)
        if (normal := _normalize(text, cfg.unicode_form)) != text:
            text, exposed = normal, True
        if cfg.fix_mojibake and (fixed := _repair_mojibake(text)) != text:
            # The repaired characters may be a BOM, a zero-width space, a line separator, or need composing.
            fixed = _NEWLINE.sub("\n", _INVISIBLE.sub("", fixed))
            text, exposed = _normalize(fixed, cfg.unicode_form), True
        if _C1.search(text):
            text, exposed = _normalize(_C1.sub("", text.replace("\x85", "\n")), cfg.unicode_form), True
    elif (normal := _normalize(text, cfg.unicode_form)) != text:  # e.g. a decomposed accent in English text
        text, exposed = normal, True
    text = _tidy_whitespace(text)
    if cfg.strip_boilerplate:
        text = _strip_boilerplate(text)
    if "\n\n\n" in text:
        text = _BLANK_RUN.sub("\n\n", text)
    return text.strip("\n"), exposed


def clean_text(text: str, cfg: CleanConfig) -> str:
    """Normalised text with line/stanza breaks kept; idempotent, never raises."""
    text, exposed = _clean_once(text, cfg)
    # Repairing one layer of mojibake, or removing a character between two others, can reveal more
    # (double-encoded text, 'Ã' + ZWSP + '©'), so repeat until nothing is left to repair: this keeps
    # the function idempotent. Ordinary text needs one pass.
    for _ in range(4):
        if not (exposed and cfg.fix_mojibake and _repair_mojibake(text) != text):
            break
        text, exposed = _clean_once(text, cfg)
    return text


# --- shared tokenization ---------------------------------------------------------------------------

# CJK ideographs, kana and hangul syllables: each one is a word of its own.
CJK_CHARS = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
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
    object to quality, toxicity and dedup, so three tokenizations become one."""
    low = text.lower()
    if low.isascii() or not _MAYBE_NON_ASCII_ALNUM.search(low):
        return Words(low, _ASCII_RUN.findall(low), False)  # the simplest pattern scans fastest
    has_cjk = _CJK.search(low) is not None
    return Words(low, (_CJK_AWARE_RUN if has_cjk else _ALNUM_RUN).findall(low), has_cjk)


# --- language identification ---------------------------------------------------------------------

_SAMPLE_CHARS = 2000
_LATIN = re.compile("[A-Za-z\xc0-\xd6\xd8-\xf6\xf8-\u024f]+")
_SCRIPTS = {  # code -> letters of its script (runs, so findall returns few strings)
    "zh": re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"),
    "ja": re.compile("[\u3040-\u30ff\u31f0-\u31ff]+"),  # kana
    "ko": re.compile("[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]+"),
    "ru": re.compile("[\u0400-\u04ff]+"),
    "ar": re.compile("[\u0600-\u06ff\u0750-\u077f]+"),
    "el": re.compile("[\u0370-\u03ff]+"),
    "he": re.compile("[\u0590-\u05ff]+"),
    "hi": re.compile("[\u0900-\u097f]+"),
    "th": re.compile("[\u0e00-\u0e7f]+"),
}
_WORD = re.compile(r"[^\W\d_]+")
# Any letter of a script other than Latin (general punctuation such as curly quotes is not one).
_NON_LATIN = re.compile("[\u0370-\u1fff\u3040-\u9fff\uac00-\ud7af\uf900-\ufaff]")
# Letters that (nearly) only one or two of the Latin-script languages use: extra evidence.
_ACCENT_LANGS = {
    "ñ": ("es",), "¿": ("es",), "¡": ("es",), "ã": ("pt",), "õ": ("pt",), "ß": ("de",), "ä": ("de",), "ö": ("de",),
    "ü": ("de",), "ç": ("fr", "pt"), "œ": ("fr",), "è": ("fr", "it"), "ê": ("fr", "pt"), "ë": ("fr", "nl"),
    "î": ("fr",), "ï": ("fr", "nl"), "ô": ("fr",), "û": ("fr",), "ù": ("fr", "it"), "ì": ("it",), "ò": ("it",),
}
_ACCENT = re.compile("[" + "".join(_ACCENT_LANGS) + "]")
_ACCENT_WEIGHT = 0.5


def _load_function_words() -> dict[str, frozenset[str]]:
    out = {}
    for line in (_LEXICONS / "function_words.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            lang, words = line.split("\t")
            out[lang] = frozenset(words.split())
    return out


FUNCTION_WORDS = _load_function_words()
_LANGS = tuple(FUNCTION_WORDS)
# word -> ((language index, weight), ...): a word shared by k languages ("a", "in", "die") gives each
# of them 1/k, so only distinctive words separate the languages.
_VOTES: dict[str, tuple[tuple[int, float], ...]] = {}
for _w in set().union(*FUNCTION_WORDS.values()):
    _ls = [i for i, lang in enumerate(_LANGS) if _w in FUNCTION_WORDS[lang]]
    _VOTES[_w] = tuple((i, 1 / len(_ls)) for i in _ls)
_ACCENT_VOTES = {ch: tuple(_LANGS.index(lang) for lang in langs) for ch, langs in _ACCENT_LANGS.items()}
_NL = _LANGS.index("nl")


def _latin_language(sample: str) -> tuple[str, float]:
    low, words, _ = lower_words(sample)
    if not _WORD.search(low):
        return "und", 0.0
    scores = [0.0] * len(_LANGS)
    # Counting in C first leaves a Python loop over the ~20 distinct function words only.
    for word, n in Counter(filter(_VOTES.__contains__, words)).items():
        for i, weight in _VOTES[word]:
            scores[i] += weight * n
    if not low.isascii():
        for ch in _ACCENT.findall(low):
            for i in _ACCENT_VOTES[ch]:
                scores[i] += _ACCENT_WEIGHT
    scores[_NL] += _ACCENT_WEIGHT * low.count("ij")
    best = max(range(len(scores)), key=scores.__getitem__)
    top = scores[best]
    if top == 0:
        return "en", 0.1  # Latin letters but no evidence at all: a weak guess
    second = max(s for i, s in enumerate(scores) if i != best)
    # Margin over the runner-up, damped when there is little evidence (1 hit -> at most 0.5).
    return _LANGS[best], round((top - second) / top * top / (top + 1), 4)


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, confidence in [0, 1]) from the first ~2000 characters; ('und', 0.0) without letters."""
    sample = text[:_SAMPLE_CHARS]
    if sample.isascii() or not _NON_LATIN.search(sample):
        return _latin_language(sample)
    letters = {"latin": sum(map(len, _LATIN.findall(sample)))}
    letters.update((code, sum(map(len, rx.findall(sample)))) for code, rx in _SCRIPTS.items())
    han, kana = letters.pop("zh"), letters.pop("ja")
    # Kana beside Han characters is Japanese; Han alone is Chinese.
    letters["ja" if kana >= 0.1 * (han + kana) else "zh"] = han + kana
    total = sum(letters.values())
    if total == 0:
        return "und", 0.0
    script = max(letters, key=letters.get)
    share = letters[script] / total
    if script != "latin":
        return script, round(share, 4)
    lang, conf = _latin_language(sample)
    return lang, round(conf * share, 4)
