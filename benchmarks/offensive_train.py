"""Train the offensive-content classifier (pipeline/text/offensive/model.py) and compare variants.

    .venv/bin/python -m benchmarks.offensive_train                 train the shipped model, write its weights
    .venv/bin/python -m benchmarks.offensive_train --compare       the comparison table (writes no weights)
    ... [--repo olid=/path/to/git/dir ...] [--out weights.npz]

Reads the fetched repositories named in DATA_SOURCES.md (`benchmarks.offensive_data`), cuts every text with
the filter's own `WordArrays`, hashes its features with the model's own kernel (`feature_rows`), and fits an
L2-regularised logistic regression with AdaGrad SGD in a compiled loop (numpy and numba only; seeded, so a
rebuild from the same commits gives the same weights). Held-out figures are printed as a Markdown table and
saved to benchmarks/results/offensive_train.md; the filter's own figures are in `benchmarks.offensive`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
from numba import njit

from benchmarks.offensive_data import HATECHECK_GROUP_NOT_HATE, HATECHECK_SLUR_FREE_HATE, load_all
from pipeline.text.offensive.model import WEIGHTS, feature_rows
from pipeline.text.wordarrays import WordArrays

RESULTS = Path(__file__).resolve().parent / "results" / "offensive_train.md"
TRAIN_SETS = ("olid_train", "toxigen_train", "conan_train", "convabuse_train", "clean_train", "fragment_train",
              "wrapped_train")
POSTS_ONLY = ("olid_train", "toxigen_train", "conan_train", "convabuse_train", "clean_train")


@njit(cache=True)
def _fit(ptr, idx, y, sample_w, n_weights, epochs, lr, l2, seed):
    """Logistic regression over CSR rows of feature occurrences scaled by 1/sqrt(row length), AdaGrad SGD with
    L2 applied to the weights a row touches (lazily, as sparse SGD does)."""
    w = np.zeros(n_weights)
    g2 = np.full(n_weights, 1e-8)
    b, b2 = 0.0, 1e-8
    order = np.arange(len(y))
    np.random.seed(seed)
    for _ in range(epochs):
        np.random.shuffle(order)
        for i in order:
            lo, hi = ptr[i], ptr[i + 1]
            if hi == lo:
                continue
            scale = 1.0 / np.sqrt(hi - lo)
            z = b
            for k in range(lo, hi):
                z += w[idx[k]] * scale
            p = 1.0 / (1.0 + np.exp(-z))
            g = (p - y[i]) * sample_w[i]
            for k in range(lo, hi):
                j = idx[k]
                grad = g * scale + l2 * w[j]
                g2[j] += grad * grad
                w[j] -= lr * grad / np.sqrt(g2[j])
            b2 += g * g
            b -= lr * g / np.sqrt(b2)
    return w, b


def rows(texts: list[str], bits: int, char_sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    return feature_rows(WordArrays.from_texts(texts), bits, char_sizes)


def train(data: dict, sets: tuple[str, ...], bits: int, char_sizes: tuple[int, ...], epochs: int = 6,
          lr: float = 0.1, l2: float = 1e-6, pos_weight: float = 1.0, seed: int = 0) -> tuple[np.ndarray, float]:
    labelled = [r for name in sets for r in data[name]]
    ptr, idx = rows([t for _, t in labelled], bits, char_sizes)
    y = np.array([label for label, _ in labelled], dtype=np.float64)
    sample_w = np.where(y > 0, pos_weight, 1.0)
    w, b = _fit(ptr, idx, y, sample_w, 1 << bits, epochs, lr, l2, seed)
    return w.astype(np.float32), float(b)


def probs(w: np.ndarray, b: float, texts: list[str], bits: int, char_sizes: tuple[int, ...]) -> np.ndarray:
    """The same logit as model._unit_sums (a whole text per row), for weights not yet saved."""
    ptr, idx = rows(texts, bits, char_sizes)
    sums = np.add.reduceat(np.r_[w[idx].astype(np.float64), 0.0], ptr[:-1]) * (np.diff(ptr) > 0)
    counts = np.diff(ptr)
    z = b + sums / np.sqrt(np.maximum(counts, 1))
    return np.where(counts > 0, 1 / (1 + np.exp(-z)), 0.0)


def prf(labels: np.ndarray, flagged: np.ndarray) -> tuple[float, float, float]:
    tp = int((labels & flagged).sum())
    p = tp / max(1, int(flagged.sum()))
    r = tp / max(1, int(labels.sum()))
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


def evaluate(w: np.ndarray, b: float, data: dict, bits: int, char_sizes: tuple[int, ...],
             threshold: float) -> dict[str, tuple[float, float, float]]:
    out = {}
    for name in ("olid_test", "toxigen_test", "conan_test", "convabuse_test"):
        labels = np.array([label for label, _ in data[name]], dtype=bool)
        out[name] = prf(labels, probs(w, b, [t for _, t in data[name]], bits, char_sizes) >= threshold)
    for name in ("clean_test", "wrapped_test"):  # false-positive rates
        clean = probs(w, b, [t for _, t in data[name]], bits, char_sizes)
        out[name] = (float((clean >= threshold).mean()), 0.0, 0.0)
    hc = [(f, t) for f, _, t in data["hatecheck"] if f in HATECHECK_SLUR_FREE_HATE + HATECHECK_GROUP_NOT_HATE]
    labels = np.array([f in HATECHECK_SLUR_FREE_HATE for f, _ in hc])
    out["hatecheck_slur_free"] = prf(labels, probs(w, b, [t for _, t in hc], bits, char_sizes) >= threshold)
    return out


VARIANTS = {  # name -> (training sets, bits, character n-gram sizes)
    "words only; OLID + clean": (("olid_train", "clean_train", "fragment_train", "wrapped_train"), 18, ()),
    "words + char 3-4; OLID + clean": (("olid_train", "clean_train", "fragment_train", "wrapped_train"), 18, (3, 4)),
    "words + char 3-4; all but CONAN and ToxiGen (research-only licences)":
        (tuple(s for s in TRAIN_SETS if s not in ("conan_train", "toxigen_train")), 18, (3, 4)),
    "words + char 3-4; posts only (no fragments, no wrapped prose)": (POSTS_ONLY, 18, (3, 4)),
    "words only; all": (TRAIN_SETS, 18, ()),
    "words + char 3-4; all; 2^18 (shipped)": (TRAIN_SETS, 18, (3, 4)),
    "words + char 3-4; all; 2^20": (TRAIN_SETS, 20, (3, 4)),
    "words + char 3-5; all; 2^18": (TRAIN_SETS, 18, (3, 4, 5)),
}
SHIPPED = "words + char 3-4; all; 2^18 (shipped)"


def compare(data: dict, threshold: float) -> str:
    lines = [f"Held-out figures of classifier variants alone (no lexicon), at P >= {threshold}. Clean: share of "
             "held-out everyday lines (TinyStories, C4) flagged; wrapped prose: of held-out hard-wrapped TinyStories "
             "lines and tinyshakespeare lines.\n",
             "| variant | OLID test P / R / F1 | ConvAbuse test F1 | ToxiGen held-out F1 | CONAN held-out F1 "
             "| HateCheck slur-free F1 "
             "| clean lines flagged | wrapped prose lines flagged | train s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (sets, bits, sizes) in VARIANTS.items():
        start = time.perf_counter()
        w, b = train(data, sets, bits, sizes)
        took = time.perf_counter() - start
        r = evaluate(w, b, data, bits, sizes, threshold)
        o = r["olid_test"]
        lines.append(f"| {name} | {o[0]:.3f} / {o[1]:.3f} / {o[2]:.3f} | {r['convabuse_test'][2]:.3f} | "
                     f"{r['toxigen_test'][2]:.3f} | "
                     f"{r['conan_test'][2]:.3f} | {r['hatecheck_slur_free'][2]:.3f} | {r['clean_test'][0]:.4f} | "
                     f"{r['wrapped_test'][0]:.4f} | "
                     f"{took:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", action="append", default=[], metavar="NAME=PATH",
                    help="git directory of a source (olid, toxigen, conan, hatecheck); defaults in offensive_data")
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--compare", action="store_true", help="train every variant and print the table; no weights")
    ap.add_argument("--threshold", type=float, default=0.5, help="P(offensive) at which the figures count a flag")
    args = ap.parse_args()
    data = load_all({k: Path(v) for k, v in (r.split("=", 1) for r in args.repo)})
    if args.compare:
        table = compare(data, args.threshold)
        print(table)
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(f"# python -m benchmarks.offensive_train --compare (commits {data['commits']})\n\n"
                           f"{table}\n", encoding="utf-8")
        return
    sets, bits, sizes = VARIANTS[SHIPPED]
    w, b = train(data, sets, bits, sizes)
    meta = {"variant": SHIPPED, "train_sets": {s: len(data[s]) for s in sets}, "commits": data["commits"],
            "epochs": 6, "trained": dt.date.today().isoformat(),
            "held_out": {k: [round(x, 4) for x in v] for k, v in evaluate(w, b, data, bits, sizes, 0.5).items()}}
    tmp = args.out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, weights=w, bias=np.float32(b), bits=np.int64(bits), char_sizes=np.array(sizes, np.int64),
                        meta=np.array(json.dumps(meta)))
    tmp.replace(args.out)
    print(json.dumps(meta, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
