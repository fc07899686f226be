"""Precision and recall of the offensive-content scorer (pipeline.text.offensive.score.offensive_score).

    .venv/bin/python -m benchmarks.offensive
    .venv/bin/python -m benchmarks.offensive --classifier profanity-check [--classifier-threshold 0.95]

Scores every line of the three labelled sets in pipeline/text/lexicons/ (label<TAB>text, 1 = offensive)
at the filter's threshold of 0.5 and prints a Markdown table of precision, recall, F1 and the
TP/FP/FN counts for each, then the misclassified lines with their scores:
- eval_offensive.tsv          the set the lexicon was tuned on (optimistic);
- eval_offensive_heldout.tsv  written blind, before the lexicon was read (recall 0.67 before the
                              round of tuning it prompted; it has been looked at since);
- eval_offensive_blind2.tsv   written after that round, blind again (precision 0.94, recall 0.64
                              before the second round it prompted; looked at since too).
"""

from __future__ import annotations

import argparse

from pipeline.text import LEXICONS
from pipeline.text.offensive.classifier import CLASSIFIERS, classifier_votes
from pipeline.text.offensive.score import offensive_score

SETS = ("eval_offensive.tsv", "eval_offensive_heldout.tsv", "eval_offensive_blind2.tsv")
THRESHOLD = 0.5


def load(name: str) -> list[tuple[int, str]]:
    lines = (LEXICONS / name).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label\ttext", f"{name}: bad header"
    return [(int(label), text) for label, text in (line.split("\t", 1) for line in lines[1:] if line)]


def measure(rows: list[tuple[int, str]], threshold: float = THRESHOLD, classifier: str = "none",
            classifier_threshold: float = 0.99) -> dict:
    """Counts, precision, recall, F1 and the misclassified (label, score, text) rows; with a classifier,
    a line scores the higher of the lexicon's score and the classifier's vote (as in the filter)."""
    votes = [0.0] * len(rows)
    if classifier != "none":
        votes = classifier_votes([text for _, text in rows], classifier_threshold, classifier).tolist()
    scored = [(label, max(offensive_score(text), vote), text) for (label, text), vote in zip(rows, votes)]
    tp = sum(1 for label, s, _ in scored if label and s >= threshold)
    fp = sum(1 for label, s, _ in scored if not label and s >= threshold)
    fn = sum(1 for label, s, _ in scored if label and s < threshold)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    wrong = [(label, s, text) for label, s, text in scored if (s >= threshold) != bool(label)]
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1, "wrong": wrong}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", default="none", choices=CLASSIFIERS,
                    help="add the trained classifier's votes (filter.offensive.classifier; needs quill[classifier])")
    ap.add_argument("--classifier-threshold", type=float, default=0.99)
    args = ap.parse_args()
    results = {name: measure(load(name), THRESHOLD, args.classifier, args.classifier_threshold) for name in SETS}
    extra = (f" + classifier {args.classifier} (votes at >= {args.classifier_threshold})"
             if args.classifier != "none" else "")
    print(f"Offensive-content scorer{extra}, threshold {THRESHOLD}\n")
    print("| set | lines | precision | recall | F1 | TP | FP | FN |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        n = len(load(name))
        print(f"| {name} | {n} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
              f"{r['tp']} | {r['fp']} | {r['fn']} |")
    for name, r in results.items():
        print(f"\nMisclassified in {name}: {len(r['wrong']) or 'none'}")
        for label, score, text in r["wrong"]:
            print(f"- {'FN' if label else 'FP'} {score:.2f}  {text}")


if __name__ == "__main__":
    main()
