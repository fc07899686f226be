"""The trained classifier's votes beside the lexicon in the offensive-content filter (on by default).

    votes = classifier_votes(words, texts, threshold, line_mode)   {document: its votes}, for a WordArrays batch
    text_votes(texts, threshold)                                   one vote per text taken whole
    offensive_scores(texts, threshold)                             lexicon and classifier together, texts whole

The model (`model.py`: logistic regression over hashed word and character n-grams, trained on public labelled
posts, see DATA_SOURCES.md) gives every line and every whole text a probability in one pass over the batch.
A unit (a line of a long document in line mode, else the whole text) gets a vote, its probability, where
that is at least `threshold` (per quality profile: `filter.offensive.classifier_thresholds`) and 0.0 elsewhere.
A text taken whole also takes the highest of its lines' probabilities, so a document that would lose a line
in line mode goes whole in document mode, as a strong lexicon word makes it go.

The lexicon's harmless senses keep their veto: a unit that uses a lexicon word in its harmless sense, read in
the unit and its document ("the ass brayed", "the cock crowed"), gets no vote, whatever the model says.
"""

from __future__ import annotations

import numpy as np

from pipeline.text.offensive.model import unit_probs
from pipeline.text.offensive.score import has_innocent_sense, offensive_score
from pipeline.text.wordarrays import WordArrays

CLASSIFIERS = ("none", "ngram")


def _vote(p: float, threshold: float, unit: str, context: str) -> float:
    return round(p, 4) if p >= threshold and not has_innocent_sense(unit, context) else 0.0


def classifier_votes(words: WordArrays, texts: list[str], threshold: float,
                     line_mode: list[bool]) -> dict[int, list[float]]:
    """{document: votes} for the documents of the batch with at least one vote: one per line of
    text.split("\\n") where `line_mode[i]`, else one for the whole text. `words` is `WordArrays` of `texts`."""
    per_line, first, whole = unit_probs(words)
    out: dict[int, list[float]] = {}
    # Only lines at or over the threshold need Python (the veto); the rest vote 0.
    hot = np.flatnonzero(per_line >= threshold)
    docs = np.searchsorted(first, hot, side="right") - 1
    hot_docs = set(docs.tolist()) | set(np.flatnonzero(whole >= threshold).tolist())
    for d in sorted(hot_docs):
        text = texts[d]
        lines_p = per_line[first[d] : first[d + 1]]
        if line_mode[d]:
            lines = text.split("\n")
            votes = [_vote(p, threshold, line, text) if p >= threshold else 0.0
                     for line, p in zip(lines, lines_p.tolist())]
        else:
            top = int(np.argmax(lines_p))
            if whole[d] >= lines_p[top]:
                unit, p = text, float(whole[d])
            else:
                unit, p = text.split("\n")[top], float(lines_p[top])
            votes = [_vote(p, threshold, unit, text)]
        if any(votes):
            out[d] = votes
    return out


def text_votes(texts: list[str], threshold: float) -> np.ndarray:
    """The classifier's vote on each text taken whole (as in document mode): its probability, or its most
    offensive line's, where that is >= threshold and not vetoed by a harmless sense; else 0.0."""
    words = WordArrays.from_texts(texts)
    votes = classifier_votes(words, texts, threshold, [False] * len(texts))
    return np.array([votes[i][0] if i in votes else 0.0 for i in range(len(texts))])


def offensive_scores(texts: list[str], classifier_threshold: float | None) -> np.ndarray:
    """The filter's score of each text taken whole (document mode): the higher of the lexicon's score and the
    classifier's vote (`classifier_threshold` None: the lexicon alone). The evaluate stage's
    offensive_sample_rate and benchmarks/offensive.py use this."""
    lexicon = np.array([offensive_score(t) for t in texts], dtype=np.float64)
    if classifier_threshold is None or not texts:
        return lexicon
    return np.maximum(lexicon, text_votes(texts, classifier_threshold))
