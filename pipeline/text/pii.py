"""PII redaction for the filter stage: e-mail addresses, phone numbers, IP addresses, card numbers, IBANs.

`redact_pii(text)` replaces each span with a typed placeholder (<EMAIL>, <PHONE>, <IP>,
<CREDIT_CARD>, <IBAN>) and returns the new text with counts per type (types found only).
It is idempotent: placeholders hold no digits or '@', and the function repeats its pass until
nothing changes, so redacting its own output changes nothing.

Numbers that are not PII stay: years ("in 1999"), times ("10:30"), dates ("2024-03-01"),
verse references ("John 3:16"), counts and page numbers. A phone number needs a phone shape
(international +CC prefix, (555) 014-2231 / 555-014-2231, or a 0-prefixed national number in
groups) and 7-15 digits; a card number needs 13-19 digits, a card-network first digit and a
valid Luhn checksum; an IBAN needs a valid mod-97 checksum.
"""

from __future__ import annotations

import re

import numpy as np
from numba import njit

from pipeline.text.wordarrays import DECIMAL, char_classes, code_points

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.\d)")
# IPv6: the full 8-group form, or a compressed form with '::'; checked further in _is_ipv6.
_IPV6 = re.compile(
    r"(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,6}(?::[0-9A-Fa-f]{1,4}){1,6}"
    r"|(?:[0-9A-Fa-f]{1,4}:){1,7}:|::(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4})(?![\w:])"
)
# 13-19 digits in groups separated by single spaces or dashes, not part of a longer number or a +CC phone.
_CARD = re.compile(r"(?<![\d+\-])(?<!\+\d)[2-6]\d{3}(?:[ -]?\d){9,15}(?![\d])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,4}){2,5}(?!\d)"  # +44 20 7946 0958, +1-202-555-0147
    r"|(?<![\w(])\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}(?!\d)"  # (555) 014-2231
    r"|(?<![\w.-])\d{3}([.-])\d{3}\1\d{4}(?![\w]|[.-]\d)"  # 555-014-2231, 555.014.2231 (same separator)
    r"|(?<![\w.-])0\d(?:[ .]\d{2}){4}(?![\w]|[ .]\d)"  # 06 12 34 56 78 (French style)
    r"|(?<![\w.-])0\d{2,4} \d{3,4} ?\d{3,4}(?![\w]|[ .-]\d)"  # 020 7946 0958, 0161 496 0123
)
_DIGIT = re.compile(r"\d")
# Phones, cards and IBANs all hold 7+ digits with at most two separator characters between them;
# IPv4 addresses hold digit.digit: text with neither skips those (expensive) patterns.
_NUMBERISH = re.compile(r"\d(?:[ .()/+-]{0,2}\d){6}|\d\.\d")
_EMAIL_RULE = ("EMAIL", _EMAIL, None)
_IPV6_RULE = ("IP", _IPV6, "_is_ipv6")
_SPACES = " \n\t\r\x0b\x0c"
# Rules for spans with 7+ digits or digit.digit, in order: cards before phones.
_NUMBER_RULES = (("IBAN", _IBAN, "_is_iban"), ("CREDIT_CARD", _CARD, "_is_card"), ("IP", _IPV4, None), ("PHONE", _PHONE,
    "_is_phone"))
# The number rules search only near number-like spans: any PII around one is shorter than this.
_WINDOW = 64


def _digits(s: str) -> str:
    return "".join(_DIGIT.findall(s))


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(span: str) -> bool:
    digits = _digits(span)
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn_ok(digits)


def _is_iban(span: str) -> bool:
    compact = span.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _is_ipv6(span: str) -> bool:
    # "a::b" or "de:ad::" could be code or prose; require 3+ groups or a full 4-digit group.
    groups = [g for g in span.split(":") if g]
    return len(groups) >= 3 or any(len(g) == 4 for g in groups)


def _is_phone(span: str) -> bool:
    return 7 <= len(_digits(span)) <= 15


_VALIDATORS = {"_is_card": _is_card, "_is_iban": _is_iban, "_is_ipv6": _is_ipv6, "_is_phone": _is_phone}


def _apply(rule: tuple, text: str, counts: dict[str, int]) -> str:
    kind, regex, validator = rule[:3]
    check = _VALIDATORS[validator] if validator else None

    def replace(m: re.Match) -> str:
        if check is not None and not check(m.group()):
            return m.group()
        counts[kind] = counts.get(kind, 0) + 1
        return f"<{kind}>"

    return regex.sub(replace, text)


def _number_regions(text: str) -> list[tuple[int, int]]:
    """Merged spans of _WINDOW characters around each number-like match, widened to whitespace."""
    regions: list[tuple[int, int]] = []
    for m in _NUMBERISH.finditer(text):
        start = max(text.rfind(c, 0, max(0, m.start() - _WINDOW)) for c in " \n\t") + 1
        ends = [i for i in (text.find(c, m.end() + _WINDOW) for c in " \n\t") if i != -1]
        end = min(ends, default=len(text))
        if regions and start <= regions[-1][1]:
            regions[-1] = (regions[-1][0], max(end, regions[-1][1]))
        else:
            regions.append((start, end))
    return regions


def _token_regions(text: str, char: str, wanted=lambda token: True) -> list[tuple[int, int]]:
    """The whitespace-delimited tokens that hold `char` (and that `wanted` accepts). E-mail and IPv6
    addresses hold no whitespace, so their rules find exactly the same matches in these spans as in
    the whole text, without scanning the rest of it."""
    regions: list[tuple[int, int]] = []
    at = text.find(char)
    while at != -1:
        start = max(text.rfind(c, 0, at) for c in _SPACES) + 1
        end = min((i for i in (text.find(c, at) for c in _SPACES) if i != -1), default=len(text))
        if wanted(text[start:end]):
            regions.append((start, end))
        at = text.find(char, end)
    return regions


def _ipv6_shaped(token: str) -> bool:
    return "::" in token or token.count(":") >= 7


def _apply_in(rules: tuple, text: str, regions: list[tuple[int, int]], counts: dict[str, int]) -> str:
    """`rules` applied, in order, to the given spans of `text` only."""
    parts, done = [], 0
    for start, end in regions:
        chunk = text[start:end]
        for rule in rules:
            chunk = _apply(rule, chunk, counts)
        parts += [text[done:start], chunk]
        done = end
    return "".join(parts) + text[done:] if regions else text


def _redact_once(text: str, counts: dict[str, int]) -> str:
    if "@" in text:  # fast paths: most prose has no '@' and no '::'
        text = _apply_in((_EMAIL_RULE,), text, _token_regions(text, "@"), counts)
    if "::" in text or text.count(":") >= 7:
        text = _apply_in((_IPV6_RULE,), text, _token_regions(text, ":", _ipv6_shaped), counts)
    # The number patterns run only on the windows around number-like spans (a web page or a book has few).
    return _apply_in(_NUMBER_RULES, text, _number_regions(text), counts)


_NUMBER_CHAIN = 7  # _NUMBERISH: 7 digits, at most two characters between neighbours


def pii_candidates(texts: list[str]) -> list[int]:
    """Indexes of the texts that redact_pii could change, found in one compiled pass over the batch's code
    points: every rule needs an '@', '::', seven ':' (IPv6) or a _NUMBERISH match (seven digits with at
    most two characters between neighbours, or digit.digit). A superset: candidates are redacted."""
    if not texts:
        return []
    first = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1, out=first[1:])
    return np.flatnonzero(_candidates(code_points("\x00".join(texts)), first, char_classes(), _NUMBER_CHAIN)).tolist()


@njit(cache=True, nogil=True)
def _candidates(cp, first, classes, chain_length):
    """bool per document [first[d], first[d + 1]) of `cp` (each followed by a separator): it holds '@', '::', a
    decimal digit '.' digit, seven ':', or starts a chain of `chain_length` decimal digits whose gaps are all
    <= 3 positions (a chain runs on across the separator, as the digits of the batch are one sequence)."""
    n = len(first) - 1
    out = np.zeros(n, np.bool_)
    colons = np.zeros(n, np.int64)
    chain_docs = np.empty(chain_length, np.int64)  # the documents of the chain's last digits, a ring
    chain, last_digit, d = 0, -4, 0
    for i in range(len(cp)):
        while first[d + 1] <= i:
            d += 1
        c = cp[i]
        if c == 64:  # '@'
            out[d] = True
        elif c == 58:  # ':'
            colons[d] += 1
            if i + 1 < len(cp) and cp[i + 1] == 58:
                out[d] = True
        elif classes[c] & DECIMAL:
            if i + 2 < len(cp) and cp[i + 1] == 46 and classes[cp[i + 2]] & DECIMAL:
                out[d] = True
            chain = chain + 1 if i - last_digit <= 3 else 1
            last_digit = i
            chain_docs[chain % chain_length] = d
            if chain >= chain_length:  # the digit chain_length - 1 back starts a window of them
                out[chain_docs[(chain + 1) % chain_length]] = True
    for k in range(n):
        out[k] |= colons[k] >= 7
    return out


def redact_pii(text: str) -> tuple[str, dict[str, int]]:
    """(text with PII replaced by <TYPE> placeholders, {type: count} for the types found)."""
    counts: dict[str, int] = {}
    for _ in range(10):  # a replacement can expose a new match at its edge; repeat until stable
        new = _redact_once(text, counts)
        if new == text:
            break
        text = new
    return text, counts
