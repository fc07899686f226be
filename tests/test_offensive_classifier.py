"""The optional trained classifier (filter.offensive.classifier): what it votes on, how its votes reach
the filter's scores, and a clear error without its extra."""

from __future__ import annotations

import sys

import pyarrow.parquet as pq
import pytest

import pipeline.text.offensive.classifier as clf
from pipeline.clean import clean
from pipeline.config import CleanConfig, FilterConfig, IngestConfig
from pipeline.filter import filter_docs
from pipeline.ingest import ingest
from pipeline.text.offensive.classifier import classifier_votes
from pipeline.text.offensive.score import offensive_score
from tests.conftest import STORIES

CURSE = "Damn you to hell."  # no word or pattern of the lexicon makes this offensive: 0.24
DONKEY = "The old ass brayed at the farmer and the donkey kicked."


def test_votes_only_where_sure_and_no_word_has_its_harmless_sense():
    assert offensive_score(CURSE) < 0.5
    votes = classifier_votes([CURSE, DONKEY, STORIES[0], "  "], 0.99)
    assert votes[0] >= 0.99
    # The classifier is sure about the donkey too, but "ass" there is the animal: no vote.
    assert clf._profanity_check()([DONKEY])[0] >= 0.99 and votes[1] == 0.0
    assert votes[2] == 0.0 and votes[3] == 0.0
    assert classifier_votes([CURSE], 0.99999)[0] == 0.0  # not sure enough


def test_unknown_classifier_and_missing_extra_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown offensive-content classifier"):
        classifier_votes([CURSE], 0.99, "perspective")
    clf._profanity_check.cache_clear()
    monkeypatch.setitem(sys.modules, "profanity_check", None)  # as if not installed
    try:
        with pytest.raises(RuntimeError, match=r"pip install 'quill\[classifier\]'"):
            classifier_votes([CURSE], 0.99)
    finally:
        clf._profanity_check.cache_clear()


def test_filter_drops_what_the_classifier_votes_on(tmp_path):
    sentences = [s for story in STORIES[1:] for s in story.split(". ")]
    long_doc = "\n".join(sentences[:5] + [CURSE] + sentences[5:10])
    assert long_doc.count("\n") + 1 >= 8
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "docs.txt").write_text(
        "\n<|endoftext|>\n".join([STORIES[0], CURSE + " " * 3 + "Go away.", long_doc]), encoding="utf-8")
    ing = ingest([str(tmp_path / "src")], tmp_path / "ingest", IngestConfig(split="separator"))
    cl = clean(ing.path, tmp_path / "clean", CleanConfig(min_chars=1, languages=[]))
    without = filter_docs(cl.path, tmp_path / "lexicon", FilterConfig.model_validate({"quality": {"min_words": 1}}))
    assert "offensive" not in without.stats["dropped"] and without.stats["offensive_lines_dropped"] == 0
    with_clf = filter_docs(cl.path, tmp_path / "classifier",
                           FilterConfig.model_validate({"quality": {"min_words": 1},
                                                        "offensive": {"classifier": "profanity-check"}}))
    assert with_clf.stats["dropped"]["offensive"] == 1  # the short document goes whole
    excluded = [r for p in with_clf.output_list("excluded") for r in pq.read_table(p).to_pylist()]
    assert [r["text"].startswith("Damn you") for r in excluded] == [True] and excluded[0]["score"] >= 0.99
    lines = [r for p in with_clf.output_list("excluded_lines") for r in pq.read_table(p).to_pylist()]
    assert [line["line"] for line in lines] == [CURSE] and lines[0]["score"] >= 0.99  # the long one loses a line
    kept = [r["text"] for p in with_clf.output_list("docs") for r in pq.read_table(p).to_pylist()]
    assert len(kept) == 2 and all(CURSE not in t for t in kept)
