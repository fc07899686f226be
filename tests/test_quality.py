"""quality_reason(s): which rule fires (datatrove's check_filter idea) on realistic text, per profile."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import QualityConfig
from pipeline.text.quality import _char_stats, count_words, count_words_batch, quality_reason, quality_reasons
from pipeline.text.wordarrays import CJK_CHARS, WordArrays

PROSE, POETRY, WEB = QualityConfig(), QualityConfig(profile="poetry"), QualityConfig(profile="web")

STORY = (
    "The lighthouse keeper climbed the stairs each night. He counted the steps, one hundred and twelve, "
    "and lit the lamp for the ships. Nobody thanked him — nobody ever did — but on stormy evenings he "
    "imagined the sailors out there, wet and tired, looking up at his small steady light... and that was enough."
)
POEM_WITH_REFRAIN = """Row the boat, row the boat,
over the water wide;
row the boat, row the boat,
home on the evening tide.

Stars on the water, stars on the sea,
the gulls gone home to rest;
row the boat, row the boat,
row the boat back to the west."""
DIALOGUE = """MIRA: Hello. Is the boat ready?
TOM: Ready since dawn. The weather isn't.
MIRA: The sky looks clear to me.
TOM: Look again — mare's tails over the point. Wind by evening.
MIRA: So we don't go?
TOM: We go. We just come back before the wind does."""
CHINESE_POEM = "床前明月光，\n疑是地上霜。\n举头望明月，\n低头思故乡。"
WEB_ARTICLE = "\n".join([
    "How to Bake Rye Bread at Home",
    "",
    "Rye flour holds less gluten than wheat, so the dough feels sticky and heavy. Do not worry: that is normal, and "
    "the loaf will still rise, only more slowly than a wheat loaf does.",
    "Mix the starter with warm water and leave it overnight in a warm kitchen. In the morning, add the flour and salt, "
    "then knead for ten minutes with wet hands.",
    "Bake at 230 °C for forty minutes, until the crust is dark and sounds hollow when you knock on it. Let it rest for "
    "a full day before you cut it: rye bread keeps for a week.",
])


@pytest.mark.parametrize(
    ("text", "cfg"),
    [
        (STORY, PROSE),
        (STORY.replace(" He ", "\nHe ") * 2, WEB),
        (POEM_WITH_REFRAIN, POETRY),
        (DIALOGUE, PROSE),
        (CHINESE_POEM, POETRY),
        (CHINESE_POEM, PROSE),
        (WEB_ARTICLE, WEB),
        ("Silent night, holy night, all is calm, all is bright, round yon virgin mother and child.", POETRY),
    ],
)
def test_ordinary_texts_pass(text: str, cfg: QualityConfig):
    assert quality_reason(text, cfg) is None


def test_count_words_ignores_punctuation_and_counts_cjk_characters():
    assert count_words("Hello — world ... !!! “quoted” 1999") == 4
    assert count_words(CHINESE_POEM) == 20
    assert count_words("我爱 Paris 2024") == 4
    assert count_words("") == 0


def test_punctuation_rich_text_is_not_non_alpha():
    # A tokenizer that counts "—", "…" and "-" as words drops text like this (datatrove's non_alpha bug).
    text = "Wait — wait … listen - the bells! — the bells … — ring - out - again — and the town - wakes — up …"
    assert quality_reason(text, PROSE) not in ("non_alpha", "symbols_non_alpha")
    assert quality_reason(text.replace("…", "."), PROSE) is None


def _words(n: int, word: str = "the cat sat on a warm mat") -> str:
    base = word.split()
    return " ".join(base[i % len(base)] for i in range(n))


@pytest.mark.parametrize(
    ("text", "cfg", "reason"),
    [
        ("ok", PROSE, "too_few_words"),
        ("%%%$$$ ### 0x3f", PROSE, "too_few_words"),
        ("— … — !!! ???", PROSE, "too_few_words"),
        (_words(30), QualityConfig(max_words=20), "too_many_words"),
        ("a b c d e f g h i j k l m n o p", PROSE, "short_words"),
        ("Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism "
         "floccinaucinihilipilification supercalifragilisticexpialidocious " * 3, PROSE, "long_words"),
        ("#love #sun #beach #summer #happy #travel #blessed #food #friends #fun", PROSE, "symbols"),
        ("Well... I... I don't... know... what... to... say... really... now...", PROSE, "symbols"),
        ("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 and the rest", PROSE, "non_alpha"),
        ("asdfghjkl;asdfjkl; qwertyuiop[] zxcvbnm,./ hjklhjkl dfghdfgh sdfsdfsdf jkjkjkjk "
         "aaaaasssdddfff qwqwqwqw ;l;l;l;l;",
         PROSE, "no_stopwords"),
        ("\n".join(["the cat sat on the mat and looked at the door"] * 30), PROSE, "repeated_lines"),
        ("\n".join(["the cat sat on the mat and looked at the door"] * 30), POETRY, "repeated_lines"),
        (" ".join(["buy the cheap pills"] * 5 + ["the cat"] * 30), PROSE, "repeated_ngrams"),
    ],
)
def test_reason(text: str, cfg: QualityConfig, reason: str):
    assert quality_reason(text, cfg) == reason


def test_refrains_are_allowed_in_poetry_only():
    chorus = "Sing hey, sing ho, the holly and the snow!"
    song = "\n".join(["The winter came across the hill,", chorus, "The river slept, the mill stood still,", chorus,
                      "The fire burned low, the night was long,", chorus])
    assert quality_reason(song, POETRY) is None
    assert quality_reason(song, PROSE) == "repeated_lines"


NAV_PAGE = ("Home\nAbout us\nProducts\nServices\nOur team\nCareers\nContact\nLogin\nSign up\nFAQ\n"
            "Privacy policy\nTerms of use")
BULLETS = "\n".join(f"• {item}." for item in [
    "Fresh bread from the village bakery", "Cheese from the hill farms", "Apples picked this morning",
    "Honey from our own bees", "Hand-knitted scarves and mittens", "Wooden toys for small children",
    "Candles made of real beeswax", "Maps of the old coast road", "Postcards painted by local artists"])
TEASERS = "\n".join(f"The {w} of the little town was the strangest thing anyone had ever seen..." for w in
                    ["baker", "mayor", "clock", "bridge", "river", "school"])
SHORT_LINES = "\n".join(["Great news!", "Read on.", "We moved.", "New shop.", "Same team.", "Come by!",
                         "Open daily.", "See you!", "This is the one longer line of the whole page, with detail."])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (NAV_PAGE, "lines_no_terminal_punct"),
        (BULLETS, "bullet_lines"),
        (TEASERS, "lines_ellipsis"),
        (SHORT_LINES, "short_lines"),
    ],
)
def test_web_line_rules(text: str, reason: str):
    assert quality_reason(text, WEB) == reason


def test_web_pages_people_rate_low_fail_and_prose_keeps_them():
    # Short pages and pages of short lines (listings, menus): people rate them low (benchmarks/web_agreement.py).
    listing = "\n".join(f"Cottage {i} sleeps four people, near the village green and the pub." for i in range(12))
    assert quality_reason(STORY, WEB) == "short_page"
    assert quality_reason(listing, WEB) == "short_mean_line"
    assert quality_reason(listing, QualityConfig(profile="web", min_mean_line_chars=60)) is None
    for text in (STORY, DIALOGUE, POEM_WITH_REFRAIN):  # a story is never judged by web rules
        assert quality_reason(text, PROSE if text != POEM_WITH_REFRAIN else POETRY) is None


def test_line_rules_never_apply_to_poetry_or_prose():
    assert quality_reason(POEM_WITH_REFRAIN, WEB) is not None  # short, unpunctuated lines: web junk
    assert quality_reason(POEM_WITH_REFRAIN, POETRY) is None
    assert quality_reason(SHORT_LINES, PROSE) is None


def test_thresholds_come_from_the_config():
    assert quality_reason(STORY, QualityConfig(min_words=1000)) == "too_few_words"
    assert quality_reason(POEM_WITH_REFRAIN,
                          QualityConfig(profile="poetry", max_dup_line_ratio_poetry=0.1)) == "repeated_lines"
    mash = "asdf qwer zxcv hjkl uiop tyty ghgh bnbn vbvb cxcx"
    assert quality_reason(mash, PROSE) == "no_stopwords"
    assert quality_reason(mash, QualityConfig(min_stopwords=0)) is None


BATCH = [
    STORY, "", "   \n\t  \n", POEM_WITH_REFRAIN, CHINESE_POEM, "ok", DIALOGUE, NAV_PAGE, BULLETS, TEASERS, SHORT_LINES,
    WEB_ARTICLE, "我爱 Paris 2024，真的很爱巴黎。" * 3, "a b c d e f g h i j k l m n o p",
    "#love #sun #beach #summer #happy #travel #blessed #food #friends #fun",
    "Well... I... I don't... know... what... to... say... really... now....",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 and the rest", "asdf qwer zxcv hjkl uiop tyty ghgh bnbn vbvb cxcx",
    "\n".join(["the cat sat on the mat and looked at the door"] * 30),
    " ".join(["buy the cheap pills"] * 5 + ["the cat"] * 30),
    "end.\" (Next) word—word 1999-2000 don't ... x²y² ½ ١٢٣ abc١٢٣ İstanbul ΣΟΦΙΑ _under_ score_ " * 4,
    WEB_ARTICLE + "\n\n" + STORY + "\n" + "   \n".join(["The same line again, word for word."] * 12),
    "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism " * 5,
    "\x00 the cat \x00 sat on the mat" * 3,
]


@pytest.mark.parametrize("cfg", [PROSE, POETRY, WEB, QualityConfig(min_words=0), QualityConfig(ngram_min_words=2)])
def test_batch_gives_each_document_its_own_reasons(cfg: QualityConfig):
    texts = BATCH + BATCH[::-1]  # the same text next to different neighbours
    batch = quality_reasons(texts, WordArrays.from_texts(texts), cfg)
    alone = [quality_reason(t, cfg) for t in texts]
    assert batch == alone
    assert len(set(alone)) >= (4 if cfg.profile == "web" else 5)  # texts that pass and fail different rules
    assert quality_reasons([], WordArrays.from_texts([]), cfg) == []


def test_batch_word_counts_match_single_texts():
    counts = count_words_batch(WordArrays.from_texts(BATCH))
    assert counts.tolist() == [count_words(t) for t in BATCH]
    assert count_words("   \n ") == 0
    assert count_words("end.\" (Next) word—word x²") == 4


def _reference_char_stats(text: str) -> list[int]:
    """The documented counts, by regex on the lower-cased text: (words, letter-bearing words, CJK characters,
    ASCII digits, symbols); CJK characters separate tokens and count one word each."""
    low = text.lower()
    tokens = re.split(f"[{CJK_CHARS}]|\\s", low)
    cjk = len(re.findall(f"[{CJK_CHARS}]", low))
    return [sum(bool(re.search(r"[^\W_]", t)) for t in tokens) + cjk,
            sum(bool(re.search(r"[^\W\d_]", t)) for t in tokens) + cjk,
            cjk, len(re.findall("[0-9]", low)), low.count("#") + low.count("...") + low.count("…")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab Z9_#.…\n\t\u3000-’½²İẞ你好カ한\x00")), max_size=40),
                max_size=6))
def test_char_stats_are_the_documented_counts(texts: list[str]):
    words = WordArrays.from_texts(texts)
    stats = _char_stats(words.classes, words.codes, words.doc_first_char)
    assert stats.T.tolist() == [_reference_char_stats(t) for t in texts]
