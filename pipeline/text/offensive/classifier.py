"""Optional trained classifier that votes beside the lexicon in the offensive-content filter.

    classifier_votes(texts, threshold) -> float per text: its probability where the classifier is at
                                          least `threshold` sure, else 0.0

`filter.offensive.classifier = "profanity-check"` uses alt-profanity-check (`pip install
'quill[classifier]'`): a linear SVM over TF-IDF word features trained on labelled online comments,
shipped inside the package with its model files (the package loads them; Quill never unpickles a
file a user provides). It catches profane abuse the lexicon scores low ("Damn you to hell."), not
threats without swear words. It does not know the harmless senses of words ("the cock crowed"), so a
text using a lexicon word in its harmless sense (for a line: its document) gets no vote, and only
near-certain probabilities vote (default 0.99). It still removes insulting lines of literature
("a bastard shame" in a sonnet): it is meant for web text and stays off by default. It scores
5-8 MB/s per core, so the filter runs 1.5-2.5x slower with it (`benchmarks/data_stages.py`
function rates; precision and recall with `benchmarks/offensive.py --classifier profanity-check`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from pipeline.text.offensive.score import has_innocent_sense

CLASSIFIERS = ("none", "profanity-check")


@lru_cache(maxsize=1)
def _profanity_check() -> Callable[[list[str]], np.ndarray]:
    try:
        from profanity_check import predict_prob
    except ImportError as e:
        raise RuntimeError("filter.offensive.classifier = 'profanity-check' needs the classifier extra: "
                           "pip install 'quill[classifier]' (alt-profanity-check)") from e
    return predict_prob


def classifier_votes(texts: list[str], threshold: float, name: str = "profanity-check",
                     contexts: list[str] | None = None) -> np.ndarray:
    """Per text, the classifier's probability that it is offensive where that is >= `threshold` and its
    context (`contexts[i]`, by default the text itself; a line's document) uses no lexicon word in its
    harmless sense; 0.0 elsewhere (and for blank texts)."""
    if name not in CLASSIFIERS[1:]:
        raise ValueError(f"unknown offensive-content classifier {name!r}; choose one of {CLASSIFIERS}")
    votes = np.zeros(len(texts))
    filled = [i for i, t in enumerate(texts) if t.strip()]
    if not filled:
        return votes
    probs = np.asarray(_profanity_check()([texts[i] for i in filled]), dtype=np.float64)
    contexts = texts if contexts is None else contexts
    for i, p in zip(filled, probs.tolist()):
        if p >= threshold and not has_innocent_sense(contexts[i]):
            votes[i] = round(p, 4)
    return votes
