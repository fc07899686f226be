"""Quill's language id (pipeline.text.langid) against py3langid on a labelled set, for the decision the clean
stage makes with the default `clean.languages = ["en", "zh"]`: keep a text or drop it as another language.

    .venv/bin/pip install -e '.[langid-compare]'      # py3langid, for this comparison only
    .venv/bin/python -m benchmarks.langid_eval        # writes benchmarks/results/langid_eval.md

The labelled set (built here, printed per group in the results):
- short English: lines of dialogue and short paragraphs (<= 80 characters) of the Gutenberg books and of the
  TinyStories sample (../shared/corpora/), and the English lines of benchmarks/data/langid_sentences.tsv;
- long English: Gutenberg paragraphs of 400+ characters and TinyStories paragraphs of 300+;
- mixed: an English paragraph (200+ characters) with a short phrase of another language in it: English;
- short other languages: the sentences of benchmarks/data/langid_sentences.tsv (written for this benchmark, 17
  languages) and single lines of Chinese poems (../shared/corpora/chinese_poetry);
- long other languages: four sentences of one language joined, and the planted French, German and Spanish
  documents of data/sample/web_scrape.jsonl.
Rules compared: Quill's `foreign_languages` (drop only when confidently another language; unsure text is kept);
py3langid's top language (drop when it is not en/zh) and py3langid abstaining the same way (drop only when its
normalised probability of another language is >= 0.5). Speed: characters per CPU second over the whole set,
each identifier on its own batch (py3langid one text at a time: it has no batch call), best of 3.
Corpora absent: those groups are left out and the results say so.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks.data_stages import REPO, SHARED

RESULTS = REPO / "benchmarks" / "results"
SENTENCES = REPO / "benchmarks" / "data" / "langid_sentences.tsv"
KEEP = ("en", "zh")
_QUOTED = re.compile(r"^[\"'‘“].{2,78}[\"'’”]?$")


def _sentences() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in SENTENCES.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            lang, text = line.split("\t")
            out.setdefault(lang, []).append(text)
    return out


def _gutenberg_paragraphs() -> list[str]:
    paragraphs = []
    for path in sorted((SHARED / "gutenberg_creative").glob("*.txt")):
        text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
        start = re.search(r"^\*{3} ?START OF.*$", text, re.M | re.I)
        end = re.search(r"^\*{3} ?END OF.*$", text, re.M | re.I)
        body = text[start.end() : end.start()] if start and end else text
        paragraphs += [" ".join(p.split()) for p in body.split("\n\n") if p.strip()]
    return paragraphs


def labelled_set(seed: int = 0) -> tuple[list[tuple[str, str, str]], list[str]]:
    """[(group, label, text)] and the groups left out (their corpus is absent)."""
    rng, items, missing = random.Random(seed), [], []
    sentences = _sentences()
    english = sentences.pop("en")
    if (SHARED / "gutenberg_creative").is_dir():
        paragraphs = _gutenberg_paragraphs()
        short = [p for p in paragraphs if len(p) <= 80 and sum(c.isalpha() for c in p) >= 2]
        items += [("short en", "en", p) for p in rng.sample(short, min(300, len(short)))]
        long = [p for p in paragraphs if len(p) >= 400]
        items += [("long en", "en", p) for p in rng.sample(long, min(100, len(long)))]
        hosts = [p for p in paragraphs if 200 <= len(p) <= 600]
    else:
        missing.append("gutenberg_creative")
        hosts = []
    if (SHARED / "tinystories_sample").is_dir():
        stories = (SHARED / "tinystories_sample" / "tinystories_train_head1000.txt").read_text(encoding="utf-8")
        lines = [line.strip() for line in stories.split("\n") if line.strip()]
        dialogue = [s for line in lines for s in re.split(r"(?<=[.!?\"])\s+(?=[A-Z\"])", line) if len(s) <= 80]
        items += [("short en", "en", s) for s in rng.sample(dialogue, min(300, len(dialogue)))]
        paragraphs = [x for x in lines if len(x) >= 300]
        items += [("long en", "en", s) for s in rng.sample(paragraphs, min(100, len(paragraphs)))]
    else:
        missing.append("tinystories_sample")
    items += [("short en", "en", s) for s in english]
    for lang, group in sentences.items():
        items += [("short other", lang, s) for s in group]
        shuffled = group[:]
        for _ in range(3):
            rng.shuffle(shuffled)
            items.append(("long other", lang, " ".join(shuffled[:4])))
    foreign_phrases = [(lang, " ".join(s.split()[:4])) for lang, group in sentences.items() if lang != "zh"
                       for s in group]
    for host in rng.sample(hosts, min(100, len(hosts))):
        lang, phrase = rng.choice(foreign_phrases)
        cut = host.find(". ", len(host) // 2)
        cut = cut + 1 if cut > 0 else len(host)
        items.append(("mixed en", "en", f"{host[:cut]} '{phrase},' she said. {host[cut:].strip()}"))
    sample = REPO / "data" / "sample" / "web_scrape.jsonl"
    planted = {3: "fr", 18: "fr", 32: "fr", 8: "de", 23: "de", 35: "de", 11: "es", 27: "es", 38: "es"}
    records = sample.read_text(encoding="utf-8").splitlines()
    items += [("long other", lang, json.loads(records[n - 1])["text"]) for n, lang in planted.items()]
    poetry = SHARED / "chinese_poetry"
    if poetry.is_dir():
        poems = json.loads((poetry / "tangshi_300.json").read_text(encoding="utf-8"))
        lines = [p for poem in poems for p in poem.get("paragraphs", [])]
        items += [("short other", "zh", p) for p in rng.sample(lines, min(50, len(lines)))]
    else:
        missing.append("chinese_poetry")
    return items, missing


def _quill(texts: list[str]) -> list[bool]:
    from pipeline.text.langid import foreign_languages

    return [found is None for found in foreign_languages(texts, list(KEEP), 0.5)]


def _quill_labels(texts: list[str]) -> list[str]:
    from pipeline.text.langid import detect_languages

    return [lang for lang, _ in detect_languages(texts)]


def _py3langid():
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        return None
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _timed(fn, texts: list[str]) -> tuple[list, float]:
    best, out = float("inf"), None
    for _ in range(3):
        start = time.process_time()
        out = fn(texts)
        best = min(best, time.process_time() - start)
    return out, best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(RESULTS / "langid_eval.md"))
    args = ap.parse_args(argv)
    items, missing = labelled_set()
    texts = [t for _g, _l, t in items]
    truth = [label in KEEP for _g, label, _t in items]
    ident = _py3langid()
    if ident is None:
        sys.exit("py3langid is not installed: pip install -e '.[langid-compare]'")
    ident.classify(texts[0])  # load the model before timing
    _quill(texts[:10])
    rules: dict[str, list[bool]] = {}
    rules["quill (abstains)"], quill_s = _timed(_quill, texts)
    verdicts, py_s = _timed(lambda ts: [ident.classify(t) for t in ts], texts)
    rules["py3langid (top language)"] = [lang in KEEP for lang, _p in verdicts]
    rules["py3langid (abstains < 0.5)"] = [lang in KEEP or p < 0.5 for lang, p in verdicts]
    groups = sorted({g for g, _l, _t in items})
    chars = sum(map(len, texts))
    lines = ["# Language id: Quill against py3langid", "",
             "Written by `python -m benchmarks.langid_eval` (machine shared with other jobs; CPU time). The decision "
             f"is the clean stage's with `clean.languages = {list(KEEP)}`: keep the text, or drop it as another "
             "language. Correct = kept when its label is en or zh, dropped otherwise.",
             ""]
    if missing:
        lines += [f"Corpora absent, their groups left out: {', '.join(missing)}.", ""]
    lines += ["| group | texts | " + " | ".join(rules) + " |", "|---|---:|" + "---:|" * len(rules)]
    for group in [*groups, "all"]:
        idx = [i for i, (g, _l, _t) in enumerate(items) if group in (g, "all")]
        cells = [f"{100 * sum(rules[r][i] == truth[i] for i in idx) / len(idx):.1f} %" for r in rules]
        lines.append(f"| {group} | {len(idx)} | " + " | ".join(cells) + " |")
    lines += ["", f"Speed on the {len(texts)} texts ({chars:,} characters): "
              f"Quill {chars / quill_s / 1e6:.2f} M chars/s (one batch), "
              f"py3langid {chars / py_s / 1e6:.2f} M chars/s (one text at a time).", ""]
    wrong = Counter((g, label) for (g, label, _t), r, t in zip(items, rules["quill (abstains)"], truth) if r != t)
    lines += [f"Quill's wrong decisions by (group, label): {dict(wrong.most_common())}.", ""]
    examples = [(g, label, t[:80]) for (g, label, t), r, tr in zip(items, rules["quill (abstains)"], truth) if r != tr]
    lines += ["Some of them:", ""] + [f"- {g} / {label}: {t!r}" for g, label, t in examples[:15]] + [""]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
