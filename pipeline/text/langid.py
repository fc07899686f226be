"""Offline language identification for the clean stage: script shares, then function words.

    detect_languages(texts) -> [(ISO 639-1 code, confidence in [0, 1]), ...]     a batch as arrays
    detect_language(text)   -> the same for one text
    foreign_languages(texts, languages, min_score) -> per text, the other language it is confidently in, or None

Each text is judged on its first ~2000 characters. Text mostly in a non-Latin script gets that
script's language (Han without kana is Chinese, with kana Japanese). Latin-script text is scored
by the function words of each language in `lexicons/function_words.txt` (a word shared by k
languages gives each 1/k) plus a few accent letters, for the whole batch in one compiled loop over
its `pipeline.text.wordarrays` words and characters; the confidence is the margin over the runner-up,
damped when there is little evidence. The clean stage drops a text only when `foreign_languages` finds it
confidently in another language: the identifier abstains on short texts, so a line of dialogue is kept.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from numba import njit

from pipeline.text import LEXICONS
from pipeline.text.wordarrays import LETTER, WordArrays, WordIndex, lower_table, unique

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
_NO_EVIDENCE = 0.1  # the confidence of the guess 'en' for Latin letters without one function word or accent


def _load_function_words() -> dict[str, frozenset[str]]:
    out = {}
    for line in (LEXICONS / "function_words.txt").read_text(encoding="utf-8").splitlines():
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


@lru_cache(maxsize=1)
def _vote_table() -> tuple:
    """The function-word votes as arrays: a `WordIndex` of the words, and per word k of it its votes
    [first[k], first[k + 1]) in `lang` / `weight` (the `_VOTES` entries, in their order)."""
    vocab = sorted(_VOTES)
    words = WordArrays.from_texts(vocab)
    n_words = np.diff(words.offsets)
    # A listed "word" the tokenizer would cut up or change (none today) is never a word of a text.
    keep = [i for i, w in enumerate(vocab)
            if n_words[i] == 1 and w == w.lower() and words.lengths[words.offsets[i]] == len(w)]
    kept = [vocab[i] for i in keep]
    assert len(unique(words.hashes[words.offsets[keep]])) == len(kept), "function-word hashes collide"
    first = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum([len(_VOTES[w]) for w in kept], out=first[1:])
    lang = np.array([i for w in kept for i, _ in _VOTES[w]], dtype=np.int64)
    weight = np.array([x for w in kept for _, x in _VOTES[w]], dtype=np.float64)
    return first, lang, weight, WordIndex(kept)


@lru_cache(maxsize=1)
def _accent_table() -> tuple:
    """Accent letter id per code point below 0x250 (0: none), and per id its votes [first[a], first[a+1]) in lang."""
    chars = list(_ACCENT_VOTES)
    table = np.zeros(0x250, dtype=np.int64)  # no code point from 0x250 on has a vote
    for a, ch in enumerate(chars, 1):
        table[ord(ch)] = a
    first = np.zeros(len(chars) + 2, dtype=np.int64)
    np.cumsum([0] + [len(_ACCENT_VOTES[ch]) for ch in chars], out=first[1:])
    lang = np.array([i for ch in chars for i in _ACCENT_VOTES[ch]], dtype=np.int64)
    assert not table[:128].any(), "_vote looks up accents beyond ASCII only"
    return table, first, lang


@lru_cache(maxsize=1)
def _non_latin_table() -> np.ndarray:
    """bool per lower-cased BMP code point (and False at 0x10000, where the others are clipped): a text with
    one may hold a _NON_LATIN letter. Those letters, plus what some of them lower-case to outside the
    ranges ('ẞ' -> 'ß', through the same lower-case table as `WordArrays`): a superset, which the regex
    then decides."""
    table = np.zeros(0x10001, dtype=bool)
    bmp = "".join(map(chr, range(0xD800))) + "\ufffd" * 0x800 + "".join(map(chr, range(0xE000, 0x10000)))
    for m in re.finditer(f"(?:{_NON_LATIN.pattern})+", bmp):
        table[m.start() : m.end()] = True
    table[np.take(lower_table(), np.flatnonzero(table))] = True
    assert not table[:128].any(), "_vote looks up other scripts beyond ASCII only"
    return table


@njit(cache=True, nogil=True)
def _vote(word_at, word_found, offsets, codes, classes, doc_first_char, first, lang, weight, accent, accent_first,
          accent_lang, n_langs, nl, non_latin):
    """(scores (n_docs, n_langs), has a letter, may hold a non-Latin letter) of each document, one at a time
    in a compiled loop.

    A language's score is a float sum made in the order of the one-document definition: function words
    in order of first appearance (weight * count), then 0.5 per accent letter in text order, then
    0.5 * count of "ij" for Dutch; so every document gets the same bits, ties included."""
    n_docs = len(offsets) - 1
    scores = np.zeros((n_docs, n_langs))
    has_letter, maybe_non_latin = np.zeros(n_docs, np.bool_), np.zeros(n_docs, np.bool_)
    count = np.zeros(len(first) - 1, np.int64)
    seen = np.empty(len(first) - 1, np.int64)
    for d in range(n_docs):
        n_seen = 0
        for w in range(offsets[d], offsets[d + 1]):
            if word_found[w]:
                at = word_at[w]
                if count[at] == 0:
                    seen[n_seen] = at
                    n_seen += 1
                count[at] += 1
        for s in range(n_seen):
            at = seen[s]
            for v in range(first[at], first[at + 1]):
                scores[d, lang[v]] += weight[v] * count[at]
            count[at] = 0
        begin, end = doc_first_char[d], min(doc_first_char[d + 1], len(codes))  # the last has no separator
        ij, any_class, wide, before = 0, np.uint8(0), False, 0  # before a document: the separator "\x00"
        for i in range(begin, end):  # ASCII first: most documents need no second look
            c = codes[i]
            any_class |= classes[i]
            ij += (c == 106) & (before == 105)  # "ij" cannot overlap itself
            before = c
            wide |= c >= 128
        has_letter[d] = (any_class & LETTER) != 0
        if wide:  # accent letters (in text order) and other scripts are beyond ASCII
            for i in range(begin, end):
                c = codes[i]
                if c >= 128:
                    maybe_non_latin[d] |= non_latin[min(c, 0x10000)]
                    if c < len(accent) and accent[c]:
                        for v in range(accent_first[accent[c]], accent_first[accent[c] + 1]):
                            scores[d, accent_lang[v]] += _ACCENT_WEIGHT
        if ij:
            scores[d, nl] += _ACCENT_WEIGHT * ij
    return scores, has_letter, maybe_non_latin


def _latin_languages(samples: list[str]) -> tuple[list[tuple[str, float]], np.ndarray, np.ndarray]:
    """Function-word (and accent) votes for each sample (`_vote` over the batch's `WordArrays`), per sample
    whether it may hold letters of another script, and the scores (samples x `_LANGS`)."""
    n = len(samples)
    words = WordArrays.from_texts(samples)
    first, lang, weight, index = _vote_table()
    at, found = index.lookup(words.hashes)
    table, afirst, alang = _accent_table()
    scores, has_letter, non_latin = _vote(at, found, words.offsets, words.codes, words.classes, words.doc_first_char,
                                          first, lang, weight, table, afirst, alang, len(_LANGS), _NL,
                                          _non_latin_table())
    best = scores.argmax(axis=1)  # the first of equal scores, as max() over range() picks
    rows = np.arange(n)
    top = scores[rows, best]
    others = scores.copy()
    others[rows, best] = -np.inf
    second = others.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        conf = (top - second) / top * top / (top + 1)  # the same float operations in the same order
    out = []
    for has, b, t, c in zip(has_letter.tolist(), best.tolist(), top.tolist(), conf.tolist()):
        if not has:
            out.append(("und", 0.0))
        elif t == 0:
            out.append(("en", _NO_EVIDENCE))  # Latin letters but no evidence at all: a weak guess
        else:  # margin over the runner-up, damped when there is little evidence (1 hit -> at most 0.5)
            out.append((_LANGS[b], round(c, 4)))
    return out, non_latin, scores


def _script_language(sample: str, latin: tuple[str, float]) -> tuple[str, float]:
    """For a sample with letters of other scripts: the script with most letters; `latin` (its function-word
    verdict) when that is Latin."""
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
    lang, conf = latin
    return lang, round(conf * share, 4)


def detect_languages(texts: list[str]) -> list[tuple[str, float]]:
    """(ISO 639-1 code, confidence in [0, 1]) for each text, from its first ~2000 characters; ('und', 0.0)
    without letters. Latin-script text is scored by function words for the whole batch as arrays."""
    return _detect(texts)[0]


def _detect(texts: list[str]) -> tuple[list[tuple[str, float]], np.ndarray, list[bool]]:
    """detect_languages' answers, the function-word scores, and per text whether it holds another script."""
    if not texts:
        return [], np.zeros((0, len(_LANGS))), []
    samples = [t[:_SAMPLE_CHARS] for t in texts]
    out, maybe_non_latin, scores = _latin_languages(samples)
    scripted = [False] * len(texts)
    for i in np.flatnonzero(maybe_non_latin).tolist():
        if _NON_LATIN.search(samples[i]):
            out[i], scripted[i] = _script_language(samples[i], out[i]), True
    return out, scores, scripted


_UNKNOWN_WORDS = 20  # Latin-script words without one function word: at this many, surely none of our languages
_EVIDENCE = 1.5  # damping of the foreign margin: one function word is no evidence (0.4), two are (0.57)


# Letters of Latin-script languages without a function-word list here (Polish, Czech, Turkish, Nordic,
# Hungarian, Romanian, ...): evidence for a language none of the lists knows ('und').
_OTHER_LATIN = re.compile("[łąęśźżćńşğıåøæőűčřšžěůțșđŁĄĘŚŹŻĆŃŞĞÅØÆŐŰČŘŠŽĚŮȚȘĐ]")


def _foreign_latin(row: np.ndarray, kept: list[int], sample: str) -> tuple[str, float]:
    """(language, confidence) that a Latin-script sample with function-word scores `row` is in a language other
    than the `kept` columns: the best other language's margin over the best kept one, damped for little
    evidence (a sibling language such as Portuguese beside Spanish does not lower it, as it does for
    `detect_languages`). 'und' (a language of no list) scores 0.5 per letter of `_OTHER_LATIN`; a sample
    without any function word or such letter is 'und' with confidence words / _UNKNOWN_WORDS."""
    unknown = 0.0 if sample.isascii() else _ACCENT_WEIGHT * len(_OTHER_LATIN.findall(sample))
    if not row.any() and not unknown:
        return "und", round(min(1.0, len(_LATIN.findall(sample)) / _UNKNOWN_WORDS), 4)
    best_kept = float(row[kept].max()) if kept else 0.0
    other = row.copy()
    other[kept] = -1.0
    f = int(other.argmax())
    lang, top = (_LANGS[f], float(other[f])) if other[f] >= unknown else ("und", unknown)
    if top <= best_kept:
        return _LANGS[int(row.argmax())], 0.0
    return lang, round((top - best_kept) / top * top / (top + _EVIDENCE), 4)


def foreign_languages(texts: list[str], languages: list[str], min_score: float) -> list[tuple[str, float] | None]:
    """For each text, the language not in `languages` it is confidently in (confidence >= `min_score`), or
    None: a text in one of `languages`, or one whose language cannot be told (short, few function words),
    is kept. A Latin-script text without a single function word of any listed language is in none of them,
    with a confidence that grows with its length ('und', words / 20): a two-word reply is no evidence, twenty
    words are. Empty `languages` keeps everything."""
    if not languages:
        return [None] * len(texts)
    found, scores, scripted = _detect(texts)
    kept = [k for k, lang in enumerate(_LANGS) if lang in languages]
    out: list[tuple[str, float] | None] = []
    for i, (lang, score) in enumerate(found):
        if lang == "und" and score == 0.0:
            out.append(None)  # no letters: nothing to tell (the quality rules judge such text)
            continue
        if not scripted[i]:
            lang, score = _foreign_latin(scores[i], kept, texts[i][:_SAMPLE_CHARS])
        out.append((lang, score) if lang not in languages and score >= min_score else None)
    return out


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, confidence in [0, 1]) from the first ~2000 characters; ('und', 0.0) without letters."""
    return detect_languages([text])[0]
