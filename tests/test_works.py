"""Creative text survives the data stages: documents are works (stories, chapters, poems), the rules judge
whole works, language id abstains on short text, and dedup compares documents, not lines within one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.clean import clean, clean_reasons
from pipeline.config import CleanConfig, FilterConfig, IngestConfig
from pipeline.filter import filter_docs
from pipeline.ingest import ingest
from pipeline.io.docshards import iter_docs
from pipeline.text.langid import foreign_languages
from pipeline.text.normalize import clean_text, strip_contents
from pipeline.text.normalize_batch import clean_texts

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
PARAGRAPH = ("Alice was beginning to get very tired of sitting by her sister on the\nbank, and of having nothing "
             "to do: once or twice she had peeped into the\nbook her sister was reading.")
BOOK = f"""Project Gutenberg's A Small Book, by Nobody

This eBook is for the use of anyone anywhere at no cost.

Title: A Small Book

*** START OF THIS PROJECT GUTENBERG EBOOK A SMALL BOOK ***




A SMALL BOOK

by Nobody



CONTENTS

     Down the Hole
     The Pool




CHAPTER I. Down the Hole

{PARAGRAPH}

'Exactly so,' said Alice.

'Oh!'

{PARAGRAPH}



CHAPTER II. The Pool

{PARAGRAPH}

'Wow! wow! wow!'

{PARAGRAPH}

*** END OF THIS PROJECT GUTENBERG EBOOK A SMALL BOOK ***

Section 1. General Terms of Use and Redistributing Project Gutenberg-tm
electronic works: you may copy it, give it away or re-use it.
"""


def _docs(m) -> list[str]:
    return [d["text"] for d in iter_docs(m.output_list("docs"))]


def _ingest_text(tmp_path: Path, text: str, name: str = "book.txt", **cfg) -> list[str]:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / name).write_text(text, encoding="utf-8")
    return _docs(ingest([str(src / name)], tmp_path / name / "ingest", IngestConfig(**cfg)))


# --- ingest: one document per work -------------------------------------------------------------------


def test_a_book_splits_at_chapter_headings_with_header_and_licence_apart(tmp_path: Path):
    docs = _ingest_text(tmp_path, BOOK)
    assert len(docs) == 4
    assert docs[0].endswith("*** START OF THIS PROJECT GUTENBERG EBOOK A SMALL BOOK ***")
    assert docs[1].startswith("A SMALL BOOK") and "CHAPTER I. Down the Hole" in docs[1]  # title page stays
    assert docs[1].endswith(PARAGRAPH) and "'Exactly so,' said Alice.\n\n'Oh!'" in docs[1]
    assert docs[2].startswith("CHAPTER II. The Pool") and "'Wow! wow! wow!'" in docs[2]
    assert docs[3].startswith("*** END OF") and docs[3].endswith("re-use it.")
    # Paragraph and line splitting remain options.
    paragraphs = [p for p in re.split(r"\n\s*\n", BOOK) if p.strip()]
    assert _ingest_text(tmp_path, BOOK, "p.txt", split="paragraph") == [p.strip("\n") for p in paragraphs]


def test_clean_cuts_header_licence_and_contents_but_keeps_every_line_of_the_chapters(tmp_path: Path):
    src = tmp_path / "book.txt"
    src.write_text(BOOK, encoding="utf-8")
    m = clean(ingest([str(src)], tmp_path / "ingest", IngestConfig()).path, tmp_path / "clean", CleanConfig(),
              executor="local")
    docs = _docs(m)
    assert len(docs) == 2 and m.stats["dropped"] == {"too_short": 2}  # the header and licence, cut to nothing
    assert not any("Gutenberg" in d or "Down the Hole\n     The Pool" in d or "CONTENTS" in d for d in docs)
    for line in ("'Exactly so,' said Alice.", "'Oh!'", "'Wow! wow! wow!'", "CHAPTER I. Down the Hole", "by Nobody"):
        assert sum(line in d for d in docs) == 1, line


def test_stories_one_per_run_of_unwrapped_lines_stay_whole(tmp_path: Path):
    para = "Once upon a time, there was a little dog named Max. Max liked to run in the park with his ball every day."
    story = f'{para}\n\n"Wow!" said Max.\n\n{para} And Max was happy.'
    other = "One day, a girl named Lily found a shiny red ball in the garden. She wanted to share it with her mom."
    text = f"{story}\n{other}\n\n{para}\n{story}\n"
    docs = _ingest_text(tmp_path, text, "stories.txt")
    assert docs == [story, f"{other}\n\n{para}", story]


def test_headingless_text_splits_into_windows_of_whole_paragraphs(tmp_path: Path):
    paragraphs = [f"Paragraph {i} of a long text without any heading at all, wrapped\nat seventy characters."
                  for i in range(200)]
    docs = _ingest_text(tmp_path, "\n\n".join(paragraphs) + "\n", "long.txt", work_max_chars=2000)
    assert len(docs) > 5 and all(len(d) <= 2000 for d in docs)
    assert "\n\n".join(docs) == "\n\n".join(paragraphs)  # whole paragraphs, none lost or cut


def test_poems_split_at_their_numerals(tmp_path: Path):
    sonnet = "\n".join(f"  Line {i} of a sonnet that runs on for a while," for i in range(14))
    docs = _ingest_text(tmp_path, f"THE SONNETS\n\n\n  I\n\n{sonnet}\n\n  II\n\n{sonnet}\n\n  III\n\n{sonnet}\n",
                        "sonnets.txt")
    assert [d.split("\n")[0].strip() for d in docs] == ["THE SONNETS", "II", "III"]


# --- clean: tables of contents, language id that abstains --------------------------------------------------


def test_tables_of_contents_are_removed_and_clean_texts_agrees():
    toc = "   I. A Scandal in Bohemia\n  II. The Red-headed League\n III. A Case of Identity\n"
    text = f"THE ADVENTURES\n\n{toc}\n\n\nADVENTURE I. A SCANDAL IN BOHEMIA\n\nTo Sherlock Holmes she is THE woman."
    assert "Bohemia\n" not in strip_contents(text) and strip_contents(text).endswith("THE woman.")
    headed = "Contents\n\n   Bed in Summer\n   A Thought\n\nBED IN SUMMER\n\nIn winter I get up at night,\nAnd dress."
    assert strip_contents(headed) == "BED IN SUMMER\n\nIn winter I get up at night,\nAnd dress."
    prose = "The contents of the box\nContents\nwere three apples, a knife and a letter."  # not a table
    assert strip_contents(prose) == prose
    cfg = CleanConfig()
    texts = [text, headed, prose, "x\n" + toc, toc[:-1] + "\n" + PARAGRAPH]
    assert clean_texts(texts, cfg) == [clean_text(t, cfg) for t in texts]


@pytest.mark.parametrize("text", [
    "'Exactly so,' said Alice.", "Mr. Bennet made no answer.", '"What sort of girl is Miss Darcy?"',
    "Jack smiled happily.", "CHAPTER XII. Alice's Evidence", "'Wow! wow! wow!'", "Bonjour!",
    # mostly English with a short French phrase
    "She curtsied and said 'Je ne sais pas, monsieur,' which was all the French she knew, and then she ran "
    "back to the garden where her brother was waiting for her by the old stone wall.",
])
def test_unsure_or_english_text_is_kept(text: str):
    assert foreign_languages([text], ["en", "zh"], 0.5) == [None]
    assert clean_reasons([text], CleanConfig(min_chars=0)) == [("", "", None)]


@pytest.mark.parametrize("text, lang", [
    ("Il était une fois un petit renard qui vivait dans la forêt avec sa mère et ses frères.", "fr"),
    ("Die kleine Katze hatte noch nie Schnee gesehen und lief mit ihrer Mutter durch den Garten.", "de"),
    ("En un pueblo pequeño junto al mar vivía una niña que tenía un perro y un gato, y todos los días iban juntos "
     "a la playa para ver los barcos de los pescadores.", "es"),
    ("Жили-были старик со старухой у самого синего моря; жили они в ветхой землянке.", "ru"),
    # Latin script, thirty words and not one function word of a listed language: none of them
    (" ".join(["Olipa", "kerran", "pieni", "kettu", "joka", "asui", "kaukana", "suuren", "metsan", "reunalla"] * 3),
     "und"),
])
def test_text_confidently_in_another_language_is_dropped(text: str, lang: str):
    (found,) = foreign_languages([text], ["en", "zh"], 0.5)
    assert found is not None and found[0] == lang and found[1] >= 0.5
    assert clean_reasons([text], CleanConfig())[0][0] == "language"
    assert foreign_languages([text], [], 0.5) == [None]  # no language list: everything stays


# --- filter: rules judge the work; dedup compares documents ----------------------------------------------


def test_refrains_and_repeated_replies_inside_works_are_not_duplicates(tmp_path: Path):
    refrain = "'Wow! wow! wow!'\n\n'Wow! wow! wow!'"
    works = [f"{PARAGRAPH}\n\n{refrain}\n\nAnd so the puppy barked all the way home.",
             f"The old sailor sang to the gulls, and the gulls sang back.\n\n{refrain}\n\nThat was their song.",
             f"{refrain}\n\nsaid the dog, and the cat answered from the roof that it was far too early for that."
             f"\n\n{PARAGRAPH}"]
    src = tmp_path / "works.txt"
    src.write_text("\n<|endoftext|>\n".join(works) + "\n", encoding="utf-8")
    m = ingest([str(src)], tmp_path / "ingest", IngestConfig())
    m = clean(m.path, tmp_path / "clean", CleanConfig(), executor="local")
    m = filter_docs(m.path, tmp_path / "filter", FilterConfig(), executor="local")
    assert m.stats["dropped"] == {} and _docs(m) == works


# --- the real corpora ------------------------------------------------------------------------------------


def _body_words(path: Path) -> int:
    text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    start = re.search(r"^\*{3} ?START OF (?:THIS|THE) PROJECT GUTENBERG.*$", text, re.M)
    end = re.search(r"^\*{3} ?END OF (?:THIS|THE) PROJECT GUTENBERG.*$", text, re.M)
    return len(text[start.end() : end.start()].split())


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "gutenberg_creative").is_dir(), reason="../shared/corpora/gutenberg_creative absent")
def test_gutenberg_books_keep_their_body(tmp_path: Path):
    books = sorted((SHARED / "gutenberg_creative").glob("*.txt"))
    m = ingest([str(p) for p in books], tmp_path / "ingest", IngestConfig())
    m = clean(m.path, tmp_path / "clean", CleanConfig(), executor="local")
    assert "language" not in m.stats["dropped"]
    m = filter_docs(m.path, tmp_path / "filter", FilterConfig(), executor="local")
    kept = _docs(m)
    assert sum(len(t.split()) for t in kept) >= 0.995 * sum(map(_body_words, books))
    assert not any(re.search(r"project gutenberg|\*{3} ?(?:start|end) of", t, re.I) for t in kept)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "tinystories_sample").is_dir(), reason="../shared/corpora/tinystories_sample absent")
def test_tinystories_stories_are_all_kept(tmp_path: Path):
    m = ingest([str(SHARED / "tinystories_sample" / "tinystories_train_head1000.txt")], tmp_path / "ingest",
               IngestConfig())
    assert 900 <= m.stats["docs_kept"] <= 1000  # 1,000 stories; a few written without blank lines stay paired
    m = clean(m.path, tmp_path / "clean", CleanConfig(), executor="local")
    m = filter_docs(m.path, tmp_path / "filter", FilterConfig(), executor="local")
    assert m.stats["dropped"] == {}


@pytest.mark.skipif(not (SHARED / "dclm_web_noisy").is_dir(), reason="../shared/corpora/dclm_web_noisy absent")
def test_web_profile_agrees_with_people_on_three_pages_in_four():
    import json

    from pipeline.config import QualityConfig
    from pipeline.text.quality import quality_reasons
    from pipeline.text.wordarrays import WordArrays

    rows = [json.loads(line) for line in (SHARED / "dclm_web_noisy" / "majority_data.jsonl").read_text().splitlines()]
    texts = clean_texts([r["text"] for r in rows], CleanConfig())
    dropped = [bool(c[0]) for c in clean_reasons(texts, CleanConfig())]
    web = quality_reasons(texts, WordArrays.from_texts(texts), QualityConfig(profile="web"))
    agree = sum((not d and q is None) == (r["label"] == 1) for d, q, r in zip(dropped, web, rows))
    assert agree / len(rows) >= 0.75
