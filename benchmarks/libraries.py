"""Quill's own text functions next to the standard libraries, on labelled sets built here from the sample corpus.

    .venv/bin/pip install -e '.[compare]'          # ftfy, datasketch, nltk (never imported by pipeline/)
    .venv/bin/python -m benchmarks.libraries [--repeat 3] [--out benchmarks/results/libraries.md]

1. Mojibake repair: `clean_text` (pipeline/text/normalize.py) vs `ftfy.fix_text` (quote uncurling, width
   and ligature fixes off, so both only repair and NFC-normalise). Broken strings are sentences with
   non-ASCII characters, encoded as UTF-8 and decoded as cp1252, as latin-1, or twice; clean strings
   (the originals and legitimate text that looks like mojibake) must come back unchanged.
2. Near-duplicate detection: `MinHasher` + `near_duplicate_groups` (pipeline/text/dedup.py) vs
   datasketch `MinHash` + `MinHashLSH`, both 128 permutations over 5-word shingles with threshold 0.8.
   Pairs: each document with a copy edited (words replaced, deleted, inserted) to a shingle Jaccard
   drawn in 0.5-0.95, labelled near-duplicate when the true Jaccard is >= 0.8; plus unrelated pairs.
3. BLEU / self-BLEU against NLTK: checked to 1e-12 in tests/test_evaluate.py (words, smoothing method 1).

Speeds are measured side by side in one process, alternating the two tools, best of --repeat runs, on a
shared 2-core machine: compare them within one run only.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import CleanConfig  # noqa: E402
from pipeline.text.dedup import MinHasher, near_duplicate_groups  # noqa: E402
from pipeline.text.normalize import clean_text  # noqa: E402
from pipeline.text.wordarrays import WordArrays  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
WORD = re.compile(r"\w+")
MOJIBAKE_MARK = re.compile("[ÃÂ][\u0080-\u00bf\u0152-\u2122]|â€|\ufffd")
SHINGLE, PERM, BANDS, THRESHOLD = 5, 128, 16, 0.8

# Legitimate text that a careless repair would "fix" (Portuguese capitals, a French word, symbols).
LOOKALIKES = ["SÃO PAULO É A MAIOR CIDADE DO BRASIL.", "Ã la carte is not French; à la carte is.",
              "The price was 5Â¢ in the old shop, said the sign.", "NÃO, obrigado.", "Â¿Qué?",
              "He wrote Ã© on the board to show students what mojibake looks like.", "Straße, naïve café, déjà vu."]
EXTRA = ["The café on the corner served crème brûlée.", "“Come here,” she said — and he came.",
         "Zoë and Chloé went to Málaga in the spring.", "It costs €12, or £10 — whichever is less.",
         "The naïve piñata maker’s fiancée smiled.", "Ångström, Øresund and Æsir are Nordic words.",
         "Dvořák’s symphony played in Kraków.", "He said: «bonjour» and «merci».", "Über alles… nein.",
         "The temperature was −5 °C at 6 a.m.", "日本語のテキストも壊れることがある。", "Привет, как дела?"]


def sentences() -> list[str]:
    """Sentences with non-ASCII characters from the sample corpus, plus EXTRA: what mojibake damages."""
    found = []
    for path in sorted(SAMPLE.rglob("*")):
        if path.suffix in (".txt", ".md", ".jsonl"):
            for s in re.split(r"(?<=[.!?])\s+|\n+", path.read_text(encoding="utf-8")):
                s = " ".join(s.split())
                if 20 <= len(s) <= 300 and not s.isascii() and not MOJIBAKE_MARK.search(s):
                    found.append(s)  # (the sample corpus also holds broken text, for the clean stage to repair)
    return sorted(set(found)) + EXTRA


def break_text(s: str, how: str) -> str | None:
    """s as a program that decoded its UTF-8 bytes wrongly would show it; None when that cannot happen."""
    try:
        if how == "cp1252":
            return s.encode("utf-8").decode("cp1252")
        if how == "latin-1":
            return s.encode("utf-8").decode("latin-1")
        if how == "double":
            return s.encode("utf-8").decode("cp1252").encode("utf-8").decode("cp1252")
    except UnicodeDecodeError:
        return None  # bytes cp1252 leaves undefined (0x81, 0x8d, ...): that text never shows up this way
    raise ValueError(how)


def mojibake_set() -> tuple[list[tuple[str, str, str]], list[str]]:
    """([(kind, broken, original)], clean strings)."""
    broken = []
    for s in sentences():
        for how in ("cp1252", "latin-1", "double"):
            b = break_text(s, how)
            if b is not None and b != s:
                broken.append((how, b, s))
    return broken, sentences() + LOOKALIKES


def nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def compare_mojibake(repeat: int) -> list[str]:
    import ftfy

    broken, clean = mojibake_set()
    cfg = CleanConfig(strip_boilerplate=False)
    ftfy_cfg = ftfy.TextFixerConfig(uncurl_quotes=False, fix_character_width=False, fix_latin_ligatures=False,
                                    normalization="NFC")
    tools = {"Quill clean_text": lambda s: clean_text(s, cfg), "ftfy.fix_text": lambda s: ftfy.fix_text(s, ftfy_cfg)}
    kinds = sorted({k for k, _, _ in broken})
    rows = []
    outputs = {}
    for name, fn in tools.items():
        out_b = [fn(b) for _, b, _ in broken]
        out_c = [fn(c) for c in clean]
        outputs[name] = out_b
        per_kind = []
        for kind in kinds:
            idx = [i for i, (k, _, _) in enumerate(broken) if k == kind]
            per_kind.append(sum(out_b[i] == nfc(broken[i][2]) for i in idx) / len(idx))
        repaired = sum(o == nfc(s) for o, (_, _, s) in zip(out_b, broken)) / len(broken)
        kept = sum(o == nfc(c) for o, c in zip(out_c, clean)) / len(clean)
        kept_look = sum(fn(c) == nfc(c) for c in LOOKALIKES) / len(LOOKALIKES)
        rows.append([name, repaired, *per_kind, kept, kept_look])
    agree = sum(a == b for a, b in zip(*outputs.values())) / len(broken)
    texts = [b for _, b, _ in broken] + clean
    texts = texts * max(1, 20_000 // len(texts))
    best = {name: float("inf") for name in tools}
    for _ in range(repeat):
        for name, fn in tools.items():  # alternating, so load changes hit both
            t0 = time.perf_counter()
            for t in texts:
                fn(t)
            best[name] = min(best[name], time.perf_counter() - t0)
    lines = [f"### Mojibake repair ({len(broken)} broken strings from {len(sentences())} sentences, "
             f"{len(clean)} clean strings of which {len(LOOKALIKES)} look like mojibake)", "",
             "| tool | repaired exactly | " + " | ".join(f"{k}" for k in kinds)
             + " | clean kept unchanged | look-alikes kept | strings/s |",
             "| --- | --- | " + " | ".join("---" for _ in kinds) + " | --- | --- | --- |"]
    for name, *vals in rows:
        lines.append(f"| {name} | " + " | ".join(f"{v:.1%}" for v in vals) + f" | {len(texts) / best[name]:,.0f} |")
    lines += ["", f"The two repairs agree on {agree:.1%} of the broken strings. Speed: {len(texts):,} strings "
              "(broken and clean mixed), best of the runs."]
    quill, fixed = outputs["Quill clean_text"], outputs["ftfy.fix_text"]
    disagreements = [(b, quill[i], fixed[i], s) for i, (_, b, s) in enumerate(broken) if quill[i] != fixed[i]]
    for b, q, f, s in disagreements[:5]:
        lines.append(f"- `{b[:60]!r}`: Quill `{q[:50]!r}`, ftfy `{f[:50]!r}` (original `{s[:50]!r}`)")
    return lines


def documents(min_words: int = 40) -> list[str]:
    docs = []
    for path in sorted(SAMPLE.rglob("*")):
        if path.suffix in (".txt", ".md"):
            docs += [p for p in path.read_text(encoding="utf-8").split("\n\n") if len(WORD.findall(p)) >= min_words]
    return sorted(set(docs))


def shingles(text: str) -> set[str]:
    words = WORD.findall(text.lower())
    if len(words) < SHINGLE:
        return {" ".join(words)}
    return {" ".join(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def edit_to(doc: str, target: float, rng: random.Random, vocab: list[str]) -> tuple[str, float]:
    """doc with random word edits until its shingle Jaccard with doc falls to about target."""
    words = doc.split()
    edited = list(words)
    j = 1.0
    while j > target and len(edited) > SHINGLE + 1:
        i = rng.randrange(len(edited))
        op = rng.random()
        if op < 0.6:
            edited[i] = rng.choice(vocab)
        elif op < 0.8:
            del edited[i]
        else:
            edited.insert(i, rng.choice(vocab))
        j = jaccard(doc, " ".join(edited))
    return " ".join(edited), j


def dedup_pairs(seed: int = 0) -> list[tuple[str, str, float]]:
    rng = random.Random(seed)
    docs = documents()
    vocab = sorted({w for d in docs for w in d.split()})
    pairs = []
    for d in docs:
        for target in (rng.uniform(0.5, 0.95), rng.uniform(0.75, 0.95)):
            edited, j = edit_to(d, target, rng, vocab)
            pairs.append((d, edited, j))
    for a, b in zip(docs, docs[1:] + docs[:1]):  # unrelated documents
        pairs.append((a, b, jaccard(a, b)))
    return pairs


def quill_dedup(pairs) -> list[bool]:
    texts = [t for a, b, _ in pairs for t in (a, b)]
    sigs = MinHasher(PERM, SHINGLE).signatures(WordArrays.from_texts(texts))
    found = []
    for k in range(len(pairs)):  # each pair on its own, so other pairs' documents cannot join the group
        groups = near_duplicate_groups(sigs[2 * k:2 * k + 2], BANDS, THRESHOLD)
        found.append(1 in groups)
    return found


def datasketch_dedup(pairs) -> list[bool]:
    from datasketch import MinHash, MinHashLSH

    def sig(text):
        m = MinHash(num_perm=PERM, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingles(text)])
        return m

    found = []
    for k, (a, b, _) in enumerate(pairs):
        lsh = MinHashLSH(threshold=THRESHOLD, num_perm=PERM)
        lsh.insert(f"a{k}", sig(a))
        found.append(bool(lsh.query(sig(b))))
    return found


def quill_time(texts: list[str]) -> None:
    sigs = MinHasher(PERM, SHINGLE).signatures(WordArrays.from_texts(texts))
    near_duplicate_groups(sigs, BANDS, THRESHOLD)


def datasketch_time(texts: list[str]) -> None:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=PERM)
    for i, t in enumerate(texts):
        m = MinHash(num_perm=PERM, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingles(t)])
        if not lsh.query(m):
            lsh.insert(i, m)


def compare_dedup(repeat: int) -> list[str]:
    pairs = dedup_pairs()
    truth = [j >= THRESHOLD for _, _, j in pairs]
    results = {"Quill MinHasher + LSH": quill_dedup(pairs), "datasketch MinHashLSH": datasketch_dedup(pairs)}
    buckets = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)]
    lines = [f"### Near-duplicate detection ({len(pairs)} pairs from {len(documents())} sample-corpus documents; "
             f"{sum(truth)} with true 5-word-shingle Jaccard >= {THRESHOLD})", "",
             "| tool | precision | recall | F1 | " + " | ".join(f"flagged at J {lo:.1f}-{min(hi, 1):.1f}"
                                                           for lo, hi in buckets) + " | docs/s |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in buckets) + " | --- |"]
    texts = [t for a, b, _ in pairs for t in (a, b)]
    texts = texts * max(1, 5000 // len(texts))
    best = {"Quill MinHasher + LSH": float("inf"), "datasketch MinHashLSH": float("inf")}
    timers = {"Quill MinHasher + LSH": quill_time, "datasketch MinHashLSH": datasketch_time}
    quill_time(texts[:10])  # compile the kernels before timing
    for _ in range(repeat):
        for name, fn in timers.items():
            t0 = time.perf_counter()
            fn(texts)
            best[name] = min(best[name], time.perf_counter() - t0)
    for name, found in results.items():
        tp = sum(f and t for f, t in zip(found, truth))
        precision = tp / max(1, sum(found))
        recall = tp / max(1, sum(truth))
        f1 = 2 * precision * recall / max(1e-9, precision + recall)
        cells = []
        for lo, hi in buckets:
            idx = [i for i, (_, _, j) in enumerate(pairs) if lo <= j < hi]
            cells.append(f"{sum(found[i] for i in idx)}/{len(idx)}" if idx else "-")
        lines.append(f"| {name} | {precision:.3f} | {recall:.3f} | {f1:.3f} | " + " | ".join(cells)
                     + f" | {len(texts) / best[name]:,.0f} |")
    a, b = results.values()
    lines += ["", f"The two agree on {sum(x == y for x, y in zip(a, b)) / len(pairs):.1%} of the pairs. Speed: "
              f"{len(texts):,} documents, signatures and LSH (datasketch: query then insert, one by one; Quill: one "
              "batch), best of the runs, in one process."]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/libraries.md")
    args = p.parse_args(argv)
    lines = ["# Quill's text functions vs the standard libraries", "",
             "`benchmarks/libraries.py` (labelled sets built from data/sample; shared 2-core machine, speeds are "
             "side by side in one run).", ""]
    lines += compare_mojibake(args.repeat) + [""] + compare_dedup(args.repeat) + [
        "", "### BLEU and self-BLEU", "", "Equal to NLTK's `sentence_bleu` (smoothing method 1) to 1e-12 on 200 random "
        "word samples: `tests/test_evaluate.py::test_bleu_and_self_bleu_equal_nltks_on_words`.", ""]
    text = "\n".join(lines)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
