"""Representation audit of the kept corpus, and gender-swapped counterfactual copies.

    audit = Audit(); audit.add(text) ...; audit.counts   -> mergeable nested counts (manifest stats.audit)
    audit.add_observations(observe(words).take(kept), len(kept))   -> the same, in two steps (filter stage)
    report_lines(counts, top=12)                          -> Markdown tables for the filter report
    gender_swap("She gave him her book.")                 -> "He gave her his book."

Groups: gender (female, male: pronouns and person nouns, singular and plural) and age (young:
child, baby, teenager, ... and "young <person>"; old: elderly, grandmother, pensioner, ... and
"old <person>", so "the old mill" is not counted). Occupations are gender-neutral job nouns
(gendered titles such as "actress" or "fisherman" would make the comparison circular). A
co-occurrence is one sentence that holds the occupation and a term of the group.

Counterfactual swap heuristics (documented limits): person nouns, titles and pronouns swap in both
directions with their case kept; names are not swapped. "her" is possessive ("his") when a word
follows that is not a function word (her dog, her own), else an object ("him": saw her, gave her
the book); "his" before such a word becomes "her", else "hers" ("the book is his.").
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from pipeline.text.wordarrays import CJK, SPACE, WORD, WordArrays, WordIndex, positions, span_indexes, unique

FEMALE = """she her hers herself woman women girl girls lady ladies mother mothers mom moms mum mums mama daughter
    daughters sister sisters wife wives aunt aunts niece nieces grandmother grandmothers grandma granny queen queens
    princess princesses bride brides girlfriend girlfriends madam mrs ms widow widows duchess empress nun
    nuns""".split()
MALE = """he him his himself man men boy boys gentleman gentlemen father fathers dad dads papa son sons brother brothers
    husband husbands uncle uncles nephew nephews grandfather grandfathers grandpa king kings prince princes groom
    grooms boyfriend boyfriends sir mr widower widowers duke emperor monk monks lord lords""".split()
YOUNG = """child children kid kids baby babies infant infants toddler toddlers teenager teenagers teen teens youth
    youths youngster youngsters adolescent adolescents""".split()
OLD = """elderly grandmother grandmothers grandfather grandfathers grandma grandpa granny pensioner pensioners retiree
    retirees""".split()
GROUPS = {"gender": ("female", "male"), "age": ("young", "old")}
OCCUPATIONS = """accountant actor architect artist astronaut author baker banker barber blacksmith builder butcher
    captain carpenter cashier chef clerk cleaner cook dancer dentist detective doctor driver editor electrician engineer
    farmer firefighter gardener guard hairdresser housekeeper hunter innkeeper janitor journalist judge lawyer librarian
    manager mechanic merchant midwife miller miner musician nanny nurse officer painter pharmacist photographer
    physician pilot plumber poet politician president priest professor programmer receptionist reporter sailor
    scientist secretary servant shepherd shopkeeper singer soldier surgeon tailor teacher trader waiter weaver writer
    mayor minister senator governor keeper""".split()


def _plural(word: str) -> str:
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith("fe"):
        return word[:-2] + "ves"
    return word + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")


_TERM_GROUPS: dict[str, tuple[str, ...]] = {}
for _group, _words in (("female", FEMALE), ("male", MALE), ("young", YOUNG), ("old", OLD)):
    for _w in _words:
        _TERM_GROUPS[_w] = _TERM_GROUPS.get(_w, ()) + (_group,)
_OCCUPATION_FORMS = {form: job for job in OCCUPATIONS for form in (job, _plural(job))}
_VOCAB = frozenset(_TERM_GROUPS) | frozenset(_OCCUPATION_FORMS)
_PEOPLE = ("man|men|woman|women|lady|ladies|gentleman|gentlemen|person|persons|people|folk|folks|fellow|fellows|"
           "couple|couples")
_AGE_WORDS = frozenset(("young", "old", "elderly", "aged"))
_AGE_PHRASE = re.compile(rf"\b(young|old|elderly|aged)\s+({_PEOPLE})\b")
_WORD = re.compile(r"[a-z]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
_GROUP_BITS = {"female": 1, "male": 2, "young": 4, "old": 8}


class _Vocabulary(NamedTuple):
    index: WordIndex  # every term, occupation form and age adjective
    bits: np.ndarray  # uint8 per word: its groups (_GROUP_BITS)
    age: np.ndarray  # bool per word: an age adjective ("old" in "old man")
    occupation: np.ndarray  # int64 per word: index of its occupation in OCCUPATIONS ("nurses" -> "nurse"), or -1
    pair_names: np.ndarray  # str [group bit number, occupation]: "group\toccupation"


@lru_cache(maxsize=1)
def _vocabulary() -> _Vocabulary:
    words = sorted(_VOCAB | _AGE_WORDS)
    bits = np.array([sum(_GROUP_BITS[g] for g in _TERM_GROUPS.get(w, ())) for w in words], dtype=np.uint8)
    occupation = np.array([OCCUPATIONS.index(_OCCUPATION_FORMS[w]) if w in _OCCUPATION_FORMS else -1 for w in words])
    pair_names = np.array([[f"{g}\t{job}" for job in OCCUPATIONS] for g in _GROUP_BITS])
    return _Vocabulary(WordIndex(words), bits, np.array([w in _AGE_WORDS for w in words]), occupation, pair_names)


def _letter_runs(words: WordArrays, vocab: _Vocabulary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, vocabulary index, position in `words.codes`) of every [a-z]+ run inside a word that also
    holds other letters or digits ("doctor2", "mané"): the audit counts `[a-z]+` runs, which equal the
    words everywhere else."""
    none = np.zeros(0, dtype=np.int64)
    codes, classes = words.codes, words.classes
    odd = np.flatnonzero(((classes & (WORD | CJK)) == WORD) & ((codes - np.uint32(97)) >= 26))  # not a-z
    if len(odd) == 0:
        return none, none, none
    # A word holds both kinds of character iff one of each are neighbours (a word is a contiguous run).
    before = (codes[np.maximum(odd - 1, 0)] - np.uint32(97)) < 26
    after = (codes[np.minimum(odd + 1, len(codes) - 1)] - np.uint32(97)) < 26
    odd = odd[before | after]
    if len(odd) == 0:
        return none, none, none
    mixed = unique(np.searchsorted(words.first_char, odd, side="right") - 1)
    docs, terms, where = [], [], []
    at = {w: i for i, w in enumerate(vocab.index.vocab)}
    for d, start, length in zip(words.doc[mixed].tolist(), words.starts[mixed].tolist(), words.lengths[mixed].tolist()):
        for m in _WORD.finditer(words.lower[d], start, start + length):
            if m[0] in at:
                docs.append(d)
                terms.append(at[m[0]])
                where.append(int(words.doc_first_char[d]) + m.start())
    return (np.array(docs, dtype=np.int64), np.array(terms, dtype=np.int64), np.array(where, dtype=np.int64))


class Observations(NamedTuple):
    """What the audit saw in a batch, per document, before deciding which documents count."""

    term_doc: np.ndarray  # int64 per vocabulary hit: its document
    term: np.ndarray  # int64 per hit: index into the vocabulary
    phrase_doc: np.ndarray  # int64 per age phrase ("old man"): its document
    phrase: np.ndarray  # str per age phrase
    pair_doc: np.ndarray  # int64 per (sentence, group, occupation) co-occurrence: its document
    pair: np.ndarray  # str per co-occurrence: "group\toccupation"

    def take(self, docs: np.ndarray) -> Observations:
        """The observations of the documents `docs` (sorted indexes), renumbered 0, 1, ..."""
        out = []
        for where, values in ((self.term_doc, self.term), (self.phrase_doc, self.phrase), (self.pair_doc, self.pair)):
            at = np.searchsorted(docs, where).clip(max=max(len(docs) - 1, 0))
            hit = docs[at] == where if len(docs) else np.zeros(len(where), dtype=bool)
            out += [at[hit], values[hit]]
        return Observations(*out)


def observe(words: WordArrays) -> Observations:
    """Vocabulary hits, age phrases and sentence co-occurrences of each document of `words`, in one pass
    of array operations; Python only for the few documents with an age adjective or mixed words."""
    vocab = _vocabulary()
    at, hit = vocab.index.lookup(words.hashes)
    extra_docs, extra_terms, extra_where = _letter_runs(words, vocab)
    docs = np.concatenate([words.doc[hit], extra_docs])
    terms = np.concatenate([at[hit].astype(np.int64), extra_terms])
    where = np.concatenate([words.first_char[hit], extra_where])  # position in words.codes
    phrase_doc, phrases, phrase_where = [], [], []
    # "old man": a phrase starts at an age adjective, a whole word, so the regex is tried there only.
    age = vocab.age[terms]
    for d, at in sorted(zip(docs[age].tolist(), where[age].tolist()), key=lambda hit: hit[1]):
        first = int(words.doc_first_char[d])
        if m := _AGE_PHRASE.match(words.lower[d], at - first):
            phrase_doc.append(d)
            phrases.append(f"{m[1]} {m[2]}")
            phrase_where.append((first + m.start(), first + m.end() - 1))
    phrase_doc, phrases = np.array(phrase_doc, dtype=np.int64), np.array(phrases, dtype=str)
    groups = _group_bits(words.n_docs, docs, terms, phrase_doc, phrases)
    # Sentence co-occurrence: only in documents with an occupation and a group term.
    job = (vocab.occupation[terms] >= 0) & (groups[docs] != 0)
    pair_doc, pairs = _cooccurrences(words, vocab, unique(docs[job]), docs, terms, where, phrase_doc, phrases,
                                     np.array(phrase_where, dtype=np.int64).reshape(-1, 2))
    return Observations(docs, terms, phrase_doc, phrases, pair_doc, pairs)


def _group_bits(n_docs: int, docs: np.ndarray, terms: np.ndarray, phrase_doc: np.ndarray,
                phrases: np.ndarray) -> np.ndarray:
    """Per document, the bits (_GROUP_BITS) of the groups it mentions."""
    return _or_bits(n_docs, np.concatenate([docs, phrase_doc]), _hit_bits(terms, phrases))


def _hit_bits(terms: np.ndarray, phrases: np.ndarray) -> np.ndarray:
    """uint8 group bits of each vocabulary hit, then of each age phrase ("young ..." or "old ...")."""
    young = np.char.startswith(phrases, "young")
    return np.concatenate([_vocabulary().bits[terms],
                           np.where(young, _GROUP_BITS["young"], _GROUP_BITS["old"]).astype(np.uint8)])


def _or_bits(n: int, at: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """uint8 per slot 0..n-1: the OR of the `bits` that land in it (`at`)."""
    out = np.zeros(n, dtype=np.uint8)
    for bit in _GROUP_BITS.values():
        out[at[(bits & bit) != 0]] |= bit
    return out


_MARKS = np.zeros(128, dtype=np.uint8)  # per ASCII code point: 1 ends a sentence before whitespace, 2 newline
_MARKS[[ord("."), ord("!"), ord("?")]] = 1
_MARKS[ord("\n")] = 2


def _sentence_boundaries(words: WordArrays) -> np.ndarray:
    """Sorted positions in `words.codes` such that two positions of one document lie in the same sentence
    (as _SENTENCE splits the lower-cased text) iff no boundary position lies in (first, second]: where a
    whitespace run after '.', '!' or '?' starts, at the first of two newlines with only whitespace between
    them, and where each document starts. A run may give several positions; no word lies between them."""
    codes = words.codes
    at = positions(codes, _MARKS, 3)  # code points >= 128 read _MARKS[127]: none
    mark = _MARKS[codes[at]]
    after = np.minimum(at + 1, len(codes) - 1)
    space = ((words.classes[after] & SPACE) != 0) & (at + 1 < len(codes))
    stops = at[(mark == 1) & space] + 1
    lines = at[mark == 2]
    # Two newlines in one whitespace run: neighbours in `lines` with only whitespace between them.
    first, gap = lines[:-1], np.diff(lines) - 1
    maybe = (gap == 0) | (space[mark == 2][:-1] & ((words.classes[lines[1:] - 1] & SPACE) != 0))
    first, gap = first[maybe], gap[maybe]
    between = span_indexes(first + 1, gap)
    not_space = (words.classes[between] & SPACE) == 0
    bad = np.zeros(len(first), dtype=bool)
    bad[np.repeat(np.arange(len(first)), gap)[not_space]] = True
    return np.sort(np.concatenate([stops, first[~bad], words.doc_first_char[:-1]]))


def _cooccurrences(words: WordArrays, vocab: _Vocabulary, job_docs: np.ndarray, docs: np.ndarray, terms: np.ndarray,
                   where: np.ndarray, phrase_doc: np.ndarray, phrases: np.ndarray,
                   phrase_where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(document, "group\toccupation") once per sentence for each occupation and group it names (group
    terms and age phrases), for the documents `job_docs`; vocabulary hits are (docs, terms, where)."""
    if len(job_docs) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=str)
    bounds = _sentence_boundaries(words)
    mine = np.isin(docs, job_docs)
    sentence = np.searchsorted(bounds, where[mine], side="right")  # a number per (document, sentence)
    # An age phrase counts in a sentence that holds all of it ("old\n\nman" is two sentences).
    p_start, p_end = (np.searchsorted(bounds, phrase_where[:, k], side="right") for k in (0, 1))
    whole = np.isin(phrase_doc, job_docs) & (p_start == p_end)
    keys, inverse = np.unique(np.concatenate([sentence, p_start[whole]]), return_inverse=True)
    bits = _or_bits(len(keys), inverse, _hit_bits(terms[mine], phrases[whole]))
    occupation = vocab.occupation[terms[mine]]
    is_job = occupation >= 0
    n_jobs = len(OCCUPATIONS)
    found = unique(inverse[: len(sentence)][is_job] * n_jobs + occupation[is_job])  # (sentence, job) once
    job_sentence, job_id = found // n_jobs, found % n_jobs
    sentence_doc = np.searchsorted(words.doc_first_char, bounds[keys - 1], side="right") - 1
    out_doc, out_pair = [], []
    for k, bit in enumerate(_GROUP_BITS.values()):
        sel = (bits[job_sentence] & bit) != 0
        out_doc.append(sentence_doc[job_sentence[sel]])
        out_pair.append(vocab.pair_names[k][job_id[sel]])
    return np.concatenate(out_doc), np.concatenate(out_pair)


class Audit:
    """Accumulates group mentions, documents per group and sentence co-occurrence with occupations."""

    def __init__(self) -> None:
        self.counts: dict[str, Any] = {"docs": 0, "mentions": {}, "docs_with": {}, "occupations": {},
                                       "cooccurrence": {}}

    def _bump(self, section: str, group: str, key: str | None = None, n: int = 1) -> None:
        table = self.counts[section]
        if key is None:
            table[group] = table.get(group, 0) + n
        else:
            row = table.setdefault(group, {})
            row[key] = row.get(key, 0) + n

    def add(self, text: str) -> None:
        self.add_batch(WordArrays.from_texts([text]))

    def add_batch(self, words: WordArrays) -> None:
        """Count the documents of `words` (the same counts as `add` on each text)."""
        self.add_observations(observe(words), words.n_docs)

    def add_observations(self, seen: Observations, n_docs: int) -> None:
        """Count `n_docs` documents from what `observe` saw in them."""
        self.counts["docs"] += n_docs
        names = _vocabulary().index.vocab
        totals = np.bincount(seen.term, minlength=len(names))
        for t in np.flatnonzero(totals).tolist():
            word, count = names[t], int(totals[t])
            for group in _TERM_GROUPS.get(word, ()):
                self._bump("mentions", group, word, count)
            if word in _OCCUPATION_FORMS:
                self._bump("occupations", _OCCUPATION_FORMS[word], n=count)
        for phrase in seen.phrase.tolist():
            self._bump("mentions", "young" if phrase.startswith("young") else "old", phrase)
        groups = _group_bits(n_docs, seen.term_doc, seen.term, seen.phrase_doc, seen.phrase)
        for group, bit in _GROUP_BITS.items():
            if with_group := int(np.count_nonzero(groups & bit)):
                self._bump("docs_with", group, n=with_group)
        for pair in seen.pair.tolist():
            self._bump("cooccurrence", *pair.split("\t"))


def sorted_counts(counts: dict[str, Any]) -> dict[str, Any]:
    """The same nested counts with keys sorted at every level (set order varies between processes)."""
    return {k: sorted_counts(v) if isinstance(v, dict) else v for k, v in sorted(counts.items())}


def report_lines(counts: dict[str, Any], top: int = 12) -> list[str]:
    """The audit as Markdown: mentions and documents per group, top terms, occupation co-occurrence."""
    mentions = {g: sum(t.values()) for g, t in counts.get("mentions", {}).items()}
    lines = ["## Representation audit", "", f"Kept documents audited: {counts.get('docs', 0):,}.", "",
             "| dimension | group | mentions | documents | share of the dimension's mentions | top terms |",
             "|---|---|---:|---:|---:|---|"]
    for dim, groups in GROUPS.items():
        total = sum(mentions.get(g, 0) for g in groups)
        for g in groups:
            terms = sorted(counts.get("mentions", {}).get(g, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:6]
            share = f"{100 * mentions.get(g, 0) / total:.1f} %" if total else "–"
            docs_with = counts.get("docs_with", {}).get(g, 0)
            lines.append(f"| {dim} | {g} | {mentions.get(g, 0):,} | {docs_with:,} | {share} | "
                         + ", ".join(f"{t} ({n})" for t, n in terms) + " |")
    co = counts.get("cooccurrence", {})
    jobs = sorted(counts.get("occupations", {}).items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    if jobs:
        lines += ["", f"Occupations (top {top} by mentions) and the sentences they share with each group:", "",
                  "| occupation | mentions | female | male | female share | young | old |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for job, n in jobs:
            f, m = co.get("female", {}).get(job, 0), co.get("male", {}).get(job, 0)
            share = f"{100 * f / (f + m):.0f} %" if f + m else "–"
            young, old = co.get("young", {}).get(job, 0), co.get("old", {}).get(job, 0)
            lines.append(f"| {job} | {n:,} | {f} | {m} | {share} | {young} | {old} |")
    return lines


# --- counterfactual augmentation -----------------------------------------------------------------

_PAIRS = """he:she him:her himself:herself man:woman men:women boy:girl boys:girls gentleman:lady gentlemen:ladies
    father:mother fathers:mothers dad:mom dads:moms papa:mama son:daughter sons:daughters brother:sister
    brothers:sisters husband:wife husbands:wives uncle:aunt uncles:aunts nephew:niece nephews:nieces
    grandfather:grandmother grandfathers:grandmothers grandpa:grandma king:queen kings:queens prince:princess
    princes:princesses groom:bride grooms:brides boyfriend:girlfriend boyfriends:girlfriends sir:madam mr:mrs
    widower:widow widowers:widows duke:duchess emperor:empress monk:nun monks:nuns actor:actress waiter:waitress
    hero:heroine""".split()
_SWAP = {a: b for a, b in (p.split(":") for p in _PAIRS)} | {b: a for a, b in (p.split(":") for p in _PAIRS)}
_SWAP.update({"her": "", "his": "", "hers": "his", "lord": "lady", "lords": "ladies", "ms": "mr", "mum": "dad",
              "mums": "dads", "granny": "grandpa"})  # "" = decided by the next word; the rest swap one way
_SWAP_RE = re.compile(r"\b(" + "|".join(sorted(_SWAP, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_NEXT_WORD = re.compile(r"[ \t]+([A-Za-z]+)")
_FUNCTION_WORDS = frozenset("""a an the to and or but nor in on at by with for from of into onto about up down out off
    over under away back again too as so that this these those if when while before after because since until than then
    now there here all both some any no every each very not never yet still also just once what how why where who whom
    which anything everything something nothing is was are were be been will would can could should""".split())


def _keep_case(source: str, word: str) -> str:
    if len(source) > 1 and source.isupper():
        return word.upper()
    return word[0].upper() + word[1:] if source[0].isupper() else word


def _swap_word(m: re.Match) -> str:
    word = m.group(0)
    low = word.lower()
    swapped = _SWAP[low]
    if not swapped:  # her / his: possessive before a content word, else object ("him") or pronoun ("hers")
        nxt = _NEXT_WORD.match(m.string, m.end())
        before_word = nxt is not None and nxt[1].lower() not in _FUNCTION_WORDS
        swapped = ("his" if before_word else "him") if low == "her" else ("her" if before_word else "hers")
    return _keep_case(word, swapped)


def gender_swap(text: str) -> str:
    """`text` with gendered words swapped (see the module docstring for the heuristics)."""
    return _SWAP_RE.sub(_swap_word, text)
