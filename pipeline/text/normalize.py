"""Text normalisation for the clean stage (pure functions, no I/O); language id is `pipeline.text.langid`.

`clean_text` repairs mojibake, normalises Unicode, removes invisible and control characters,
tidies whitespace while keeping line and stanza breaks, and drops web/Gutenberg boilerplate
lines and tables of contents. It is idempotent and never raises for any `str`; its output always encodes as UTF-8.
`pipeline.text.normalize_batch.clean_texts` does the same for a batch. The per-text
tokenization the filter shares, `lower_words`, lives in `pipeline.text.wordarrays`.

Speed matters (the clean+filter+dedup target is >= 5 MB/s per core), so every step is a
precompiled regex or a C-level str method guarded by a cheap test that skips it for text that
cannot need it (ASCII text skips mojibake repair and normalisation, and so on).
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right

from pipeline.config import CleanConfig
from pipeline.text import LEXICONS

# --- mojibake: UTF-8 bytes that were decoded as cp1252 / latin-1 --------------------------------

# Each byte 0x80-0xff as a character in either wrong decoding (cp1252 puts punctuation at 0x80-0x9f,
# latin-1 puts C1 controls there; both agree on 0xa0-0xff).
_BYTE_OF = {chr(b): b for b in range(0x80, 0x100)}
for _b in range(0x80, 0xA0):
    try:
        _BYTE_OF[bytes([_b]).decode("cp1252")] = _b
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d are unassigned in cp1252
        pass
CONT = "[" + "".join(re.escape(c) for c, b in _BYTE_OF.items() if b < 0xC0) + "]"
# A well-formed UTF-8 multi-byte sequence spelled in those characters: lead byte + continuations.
# "â€" alone is the right double quote whose third byte (0x9d, unassigned in cp1252) got lost.
_MOJIBAKE = re.compile(f"[\xf0-\xf4]{CONT}{{3}}|[\xe0-\xef]{CONT}{{2}}|[\xc2-\xdf]{CONT}|\xe2\u20ac\ufffd?")
_LOST_QUOTE = "\xe2\u20ac"
_LEAD_CONT = re.compile(f"[\xc2-\xf4]{CONT}")  # every candidate above starts like this


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

UI_MAX_CHARS = 40  # a button or menu label is short
_PHRASE_MAX_CHARS = 300  # a longer line is a real paragraph that merely mentions a keyword


def _load_boilerplate() -> tuple[tuple[str, ...], re.Pattern, re.Pattern]:
    """(hint substrings, whole-line UI regex, phrase regex) from lexicons/boilerplate.txt."""
    rows: dict[str, list[str]] = {"hint": [], "ui": [], "phrase": []}
    for line in (LEXICONS / "boilerplate.txt").read_text(encoding="utf-8").split("\n"):
        if line and not line.startswith("#"):
            kind, value = line.split("\t", 1)
            rows[kind].append(value.split("\t")[-1])  # a phrase's name column is documentation
    hints = tuple(rows["hint"])
    ui = re.compile("(?:" + "|".join(rows["ui"]) + r")[\s.:!»›>]*")
    phrase = re.compile("|".join(f"(?:{p})" for p in rows["phrase"]))
    return hints, ui, phrase


# Hints are found with `in` and str.find (C substring search): a regex alternation of 30 words
# scans ~10x slower. Only lines holding a hint are tested against the phrase and nav-bar rules.
HINT_WORDS, UI_LINE, _PHRASE = _load_boilerplate()
_NEWLINE_CHAR = re.compile("\n")
_NAV_SEP = re.compile(r"\s*[|•·»›]\s*|\s+>\s+")
_PG_START = re.compile(r"^\*{3} ?start of (?:this|the) project gutenberg.*$", re.I | re.M)
_PG_END = re.compile(r"^\*{3} ?end of (?:this|the) project gutenberg.*$", re.I | re.M)


def _is_nav_bar(line: str) -> bool:
    """'Home | About | Contact': three or more short items (<= 4 words) between menu separators."""
    items = [p for p in _NAV_SEP.split(line) if p]
    return len(items) >= 3 and all(len(p) <= 30 and p.count(" ") <= 3 and p[-1] not in ".!?,;" for p in items)


def _needed_strings(items) -> frozenset[str] | None:
    """Strings one of which every match of the parsed regex `items` contains (None: none found). Only a
    quick test: any construct it does not know simply gives no strings."""
    best: frozenset[str] | None = None

    def consider(found: frozenset[str] | None) -> None:
        nonlocal best
        # The most selective: the longest shortest string, then the fewest strings.
        if found and (best is None or (min(map(len, found)), -len(found)) > (min(map(len, best)), -len(best))):
            best = found

    run = ""
    for op, av in items:
        if op is _sre.LITERAL:
            run += chr(av)
            continue
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and len(av[2]) == 1 and av[2][0][0] is _sre.LITERAL:
            run += chr(av[2][0][1]) * av[0]  # '\*{3}': three of them
            if av[0] == av[1]:
                continue
        if op is _sre.AT:  # zero-width (\b, ^): the literals on either side are adjacent
            continue
        consider(frozenset([run]) if run else None)
        run = ""
        if op is _sre.SUBPATTERN:
            consider(_needed_strings(av[-1]))
        elif op is _sre.BRANCH:
            each = [_needed_strings(branch) for branch in av[1]]
            consider(frozenset().union(*each) if all(each) else None)
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and av[0] >= 1:
            consider(_needed_strings(av[2]))
        elif op is _sre.IN and all(kind is _sre.LITERAL for kind, _ in av):
            consider(frozenset(chr(c) for _, c in av))
    consider(frozenset([run]) if run else None)
    return best


try:  # the regex parser is internal to `re`: without it every hinted line simply gets the full test
    import re._constants as _sre
    import re._parser as _sre_parser

    _needs = _needed_strings(_sre_parser.parse(_PHRASE.pattern))
    _PHRASE_NEEDS = None if _needs is None else re.compile("|".join(map(re.escape, sorted(_needs))))
except (ImportError, AttributeError, TypeError):
    _PHRASE_NEEDS = None


def is_boilerplate(line: str) -> bool:
    """For a line holding a hint: placeholder or licence text at any length, else a short phrase or menu."""
    low = line.strip().lower()
    if "lorem ipsum" in low or "project gutenberg" in low:
        return True
    if len(low) > _PHRASE_MAX_CHARS:
        return False
    # Most hinted lines ("share", "mail" in prose, "|" in menus) hold none of the strings a phrase needs:
    # they skip the long phrase regex. A menu needs a separator.
    if (_PHRASE_NEEDS is None or _PHRASE_NEEDS.search(low)) and _PHRASE.search(low):
        return True
    return any(c in low for c in "|•·»›>") and _is_nav_bar(low)


def is_ui_line(line: str) -> bool:
    """A whole line that is only a button or menu label ('Read more »', 'Accept all cookies')."""
    return len(line) <= UI_MAX_CHARS and UI_LINE.fullmatch(line.strip().lower()) is not None


def _cut_gutenberg(text: str) -> str:
    """Only the book between the Project Gutenberg START/END markers is text; header and licence are not."""
    if starts := list(_PG_START.finditer(text)):
        text = text[starts[-1].end() :]
    if end := _PG_END.search(text):
        text = text[: end.start()]
    return text


# A table of contents: a "Contents" line and the short entries after it, or (without that line) three or more
# numbered chapter lines in a row ("   I. A Scandal in Bohemia", "CHAPTER II. The Pool of Tears"). Both match
# after a "\n" (search "\n" + text): a literal first character lets the regex engine skip to line starts.
CONTENTS = re.compile(r"\n[ \t]*(?:(?:Table|TABLE|table) (?:of|OF) )?(?:Contents|CONTENTS|contents)[ \t]*[.:]?[ \t]*"
                      r"(?=\n|\Z)")
TOC_RUN = re.compile(r"\n(?:[ \t]*(?:[IVXLC]+\.|(?i:chapter)[ \t]+[\dIVXLC]+\.?)[ \t]+[^\n]{1,60}(?:\n|\Z)){3,}")
_TOC_ENTRY_CHARS = 60
_SENTENCE_END = (".", ",", ";", "!", "?", '"', "”", "’", ":")


def _toc_end(text: str, at: int) -> int:
    """Where the entries after a "Contents" line ending at `at` stop: before the first line that is long or
    ends like a sentence (text, not a title), and before a lone short line just above that text (the heading
    of what follows); `at` itself when fewer than two entries go."""
    entries, end, last_block, block_lines, block_start = 0, at, 0, 0, at
    for line in text[at:].split("\n")[1:]:
        stripped = line.strip()
        if stripped and (len(stripped) > _TOC_ENTRY_CHARS or stripped.endswith(_SENTENCE_END)):
            if block_lines == 1:  # a heading over the text, not an entry
                end, entries = block_start, entries - 1
            break
        if stripped:
            if not last_block:
                block_lines, block_start = 0, end
            block_lines += 1
        last_block = bool(stripped)
        entries += bool(stripped)
        end += len(line) + 1
    return end if entries >= 2 else at


def strip_contents(text: str) -> str:
    """`text` without its tables of contents (the chapter titles are where the chapters are)."""
    padded = "\n" + text
    if (m := CONTENTS.search(padded)) and (end := _toc_end(padded, m.end())) > m.end():
        padded = padded[: m.start() + 1] + padded[end + 1 :]
    return TOC_RUN.sub("\n", padded)[1:]


def _hinted_lines(low: str) -> set[int]:
    """Indexes of the lines that hold a hint substring (found by C substring search, not per line)."""
    present = [word for word in HINT_WORDS if word in low]
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
    text = strip_contents(text)
    hinted = _hinted_lines(text.lower())  # lower() keeps every "\n", so line indexes agree
    lines = text.split("\n")
    kept = [ln for i, ln in enumerate(lines) if not (is_ui_line(ln) or i in hinted and is_boilerplate(ln))]
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
            # Peel every layer of double-encoded text first: a layer's own no-break spaces and soft hyphens
            # ('Ã\xa0' is 'à', 'Ã\xad' is 'í') would be tidied or removed below before the next pass saw them.
            for _ in range(3):
                if (again := _repair_mojibake(fixed)) == fixed:
                    break
                fixed = again
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
