"""The trained offensive-content classifier (filter.offensive.classifier = "ngram", the default): its weights,
its determinism, labelled lines per category, literature, and how its votes combine with the lexicon's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import pipeline.text.offensive.classifier as clf
from pipeline.clean import clean
from pipeline.config import CleanConfig, FilterConfig, IngestConfig
from pipeline.filter import filter_docs
from pipeline.ingest import ingest
from pipeline.text.offensive.classifier import classifier_votes, offensive_scores
from pipeline.text.offensive.model import WEIGHTS, line_probs, load_model, text_probs
from pipeline.text.offensive.score import offensive_score
from pipeline.text.wordarrays import WordArrays
from tests.conftest import STORIES

WEB = 0.5  # filter.offensive.classifier_thresholds["web"]
# Slur-free hate the lexicon scores 0 (no word or pattern of it matches).
HATE = "Disabled people are a burden and shouldn't be allowed to have kids."
GUTENBERG = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpora" / "gutenberg_creative"


def test_weights_load_without_pickle_and_once():
    with np.load(WEIGHTS, allow_pickle=False) as z:  # would raise on an object array
        assert {k: z[k].dtype.kind for k in z.files} == {"weights": "f", "bias": "f", "bits": "i",
                                                          "char_sizes": "i", "meta": "U"}
    assert WEIGHTS.stat().st_size <= 20e6
    model = load_model()
    assert load_model() is model and len(model.weights) == 1 << model.bits
    assert set(model.meta["commits"]) >= {"olid", "toxigen", "conan", "convabuse"}  # as in DATA_SOURCES.md


def test_same_text_same_score_alone_or_in_any_batch():
    lines = [HATE, "You are a disgusting pig.", "The cock crowed at dawn.", ""]
    alone = [float(text_probs([t])[0]) for t in lines]
    batch = text_probs(STORIES + lines + STORIES)[len(STORIES) : len(STORIES) + len(lines)]
    assert alone == batch.tolist() and alone[-1] == 0.0
    # A line of a document scores as that line taken alone.
    probs, first = line_probs(WordArrays.from_texts(["\n".join(lines), STORIES[0]]))
    assert first.tolist() == [0, 4, 4 + STORIES[0].count("\n") + 1]
    assert probs[:4].tolist() == alone


def test_lines_are_counted_as_split_gives_them():
    texts = ["", "\n", "a\n\nb\n", "only", "x\ny"]
    _, first = line_probs(WordArrays.from_texts(texts))
    assert np.diff(first).tolist() == [t.count("\n") + 1 for t in texts]


# Written for these tests (not from any training set). Per category: what the filter must do with the line
# taken alone, web thresholds. The classifier adds what the lexicon misses: most of the slur-free hate.
LABELLED = {
    "insult": (True, ["Only an absolute idiot would believe the garbage you post.",
                      "You are a disgusting pig and everyone here knows it.",
                      "Shut up, you ugly moron, nobody asked for your opinion."]),
    "threat": (True, ["I know where you live and I'm coming for you tonight.",
                      "I will burn your house down with your family inside."]),
    "dehumanisation": (True, [HATE, "Trans people are mentally ill freaks who need to be locked away.",
                              "Black people are naturally violent and can't be trusted.",
                              "Immigrants are a disease eating this country from the inside."]),
    "profanity": (True, ["This fucking printer jammed again.", "Screw this shit, I'm going home."]),
    "harmless": (False, ["The ass brayed loudly in the stable all night.",
                         "At dawn the cock crowed three times from the fence.",
                         "The knight swore he would kill the dragon or die trying.",
                         "Dick Whittington walked to London with his cat."]),
    "reclaimed or quoted": (False, ["I'm proud to be a dyke and I'll say it loud.",
                                    "The museum exhibit documents the slurs used against Chinese workers.",
                                    "It is wrong to say that women are less intelligent than men."]),
    "neutral about a group": (False, ["The refugee family opened a bakery on the high street.",
                                      "Black artists shaped jazz, blues and hip hop."]),
}


@pytest.mark.parametrize("category", LABELLED)
def test_labelled_lines_per_category(category):
    offensive, lines = LABELLED[category]
    flagged = (offensive_scores(lines, WEB) >= 0.5).tolist()
    assert flagged == [offensive] * len(lines), list(zip(lines, flagged))


def test_the_classifier_finds_slur_free_hate_the_lexicon_misses():
    assert offensive_score(HATE) == 0.0
    assert offensive_scores([HATE], None)[0] == 0.0  # the lexicon alone
    assert offensive_scores([HATE], WEB)[0] >= 0.75


def test_harmless_senses_veto_the_classifier(monkeypatch):
    # Whatever the model says, a unit using a lexicon word in its harmless sense (read with its document) gets
    # no vote; other units of the same document still do.
    monkeypatch.setattr(clf, "unit_probs", lambda words: (np.full(5, 0.99), np.array([0, 4, 5]), np.full(2, 0.99)))
    doc = "The old ass\nwould not move.\nYou filthy animal, I said."  # "ass" here, "brayed" three lines on
    texts = [doc + "\nIt brayed.", "The cock crowed."]
    words = WordArrays.from_texts(texts)
    votes = classifier_votes(words, texts, 0.9, [True, False])
    assert votes == {0: [0.0, 0.99, 0.99, 0.99]}  # the first line's "ass" is the animal; the short text is vetoed


def test_a_text_taken_whole_votes_with_its_most_offensive_line():
    # Document mode (and short documents): one offending line among harmless ones makes the text go, as a
    # strong lexicon word does, however long the rest.
    doc = "\n".join(STORIES[1].split(". ")[:6] + [HATE])
    words = WordArrays.from_texts([doc])
    assert text_probs(words)[0] < text_probs([HATE])[0]
    assert classifier_votes(words, [doc], WEB, [False]) == {0: [round(float(text_probs([HATE])[0]), 4)]}


def test_literature_lines_keep_their_place():
    lines = ["Tired with all these, for restful death I cry,",  # Sonnet 66
             "'Off with her head!' the Queen shouted at the top of her voice.",
             "the wolf thought to himself: 'What a tender young creature! what a nice",
             "“I certainly am not stupid!” thought the messenger.",
             "Then the cock crowed, and the wicked witch was burned to ashes."]
    words = WordArrays.from_texts(["\n".join(lines)])
    assert classifier_votes(words, ["\n".join(lines)], FilterConfig().offensive.classifier_threshold("prose"),
                            [True]) == {}


@pytest.mark.skipif(not GUTENBERG.exists(), reason="../shared/corpora/gutenberg_creative is absent")
def test_the_seven_books_lose_few_lines_to_the_classifier():
    texts = [p.read_text(encoding="utf-8") for p in sorted(GUTENBERG.glob("*.txt"))]
    threshold = FilterConfig().offensive.classifier_threshold("prose")
    votes = classifier_votes(WordArrays.from_texts(texts), texts, threshold, [True] * len(texts))
    assert sum(v > 0 for d in votes.values() for v in d) <= 10


def test_filter_uses_the_classifier_by_default_and_reports_who_flagged_what(tmp_path):
    sentences = [s for story in STORIES[1:] for s in story.split(". ")]
    long_doc = "\n".join(sentences[:5] + [HATE] + sentences[5:10] + ["What the fuck is this."])
    assert long_doc.count("\n") + 1 >= 8
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "docs.txt").write_text(
        "\n<|endoftext|>\n".join([STORIES[0], "Trans people are mentally ill freaks who need to be locked away.",
                                  long_doc]), encoding="utf-8")
    ing = ingest([str(tmp_path / "src")], tmp_path / "ingest", IngestConfig(split="separator"))
    cl = clean(ing.path, tmp_path / "clean", CleanConfig(min_chars=1, languages=[]))
    web = {"quality": {"min_words": 1, "profile": "web", "max_short_line_ratio": 1.0,
                       "max_no_terminal_punct_ratio": 1.0, "min_words_web": 1, "min_mean_line_chars": 0}}
    lexicon_only = filter_docs(cl.path, tmp_path / "lexicon",
                               FilterConfig.model_validate({**web, "offensive": {"classifier": "none"}}))
    assert "offensive" not in lexicon_only.stats["dropped"] and lexicon_only.stats["offensive_lines_dropped"] == 1
    assert lexicon_only.stats["offensive_flagged"] == {"lexicon_lines": 1}
    both = filter_docs(cl.path, tmp_path / "classifier", FilterConfig.model_validate(web))
    assert both.stats["dropped"]["offensive"] == 1  # the short document goes whole
    lines = [r["line"] for p in both.output_list("excluded_lines") for r in pq.read_table(p).to_pylist()]
    assert lines == [HATE, "What the fuck is this."]  # the long one loses its two lines
    flagged = both.stats["offensive_flagged"]
    assert flagged["lexicon_lines"] == 1 and flagged["classifier_lines"] >= 1 and flagged["classifier_docs"] == 1
    kept = [r["text"] for p in both.output_list("docs") for r in pq.read_table(p).to_pylist()]
    assert len(kept) == 2 and all(HATE not in t for t in kept)
    assert "offensive_flagged" in (Path(both.path).parent / "report.md").read_text()
