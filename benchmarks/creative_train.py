"""Training on works against training on paragraphs: the `small` preset on the TinyStories train sample, with
the documents of a base revision's ingest -> clean -> filter (default: d8cd222, blank-line paragraphs) and of this
tree's (one document per story); tokenize and train are this tree's, with the same number of steps, so the same
number of training tokens.

    .venv/bin/python -m benchmarks.creative_train --steps 2000     # the preset's budget (~11 min per run alone)
    .venv/bin/python -m benchmarks.creative_train --steps 500      # a quarter of it

Reports, per side: documents, the train stage's validation bits per character on its own held-out 5 % (by id
hash, so the two sides hold out different text of the same stories) and on one common held-out text (the first
200 kB of ../shared/corpora/tinystories_sample/tinystories_validation_head.txt, with each side's tokenizer), and
a few samples. Writes benchmarks/results/creative_train.md. Corpus absent: skipped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.compare import BASE, export_base, local_stages
from benchmarks.data_stages import REPO, SHARED

RESULTS = REPO / "benchmarks" / "results"
STORIES = SHARED / "tinystories_sample" / "tinystories_train_head1000.txt"
HELD_OUT = SHARED / "tinystories_sample" / "tinystories_validation_head.txt"
PROMPTS = ["Once upon a time", "Lily saw a big dog.", '"Can I play with you?"']


def filtered(package: str, work: Path) -> Path:
    cfg = importlib.import_module(f"{package}.config").small()
    cfg.filter.audit.enabled = False
    return local_stages(package, [str(STORIES)], work, cfg)[2].path


def common_bpc(checkpoint: Path, block: int = 0) -> float:
    """Bits per character of the checkpoint on the common held-out text (stories joined by end-of-text, as the
    tokenize stage joins documents), tokenized with the side's tokenizer, in non-overlapping windows."""
    import math

    import torch

    from model.checkpoint import load_checkpoint
    from model.tokenizer import Tokenizer

    docs = [d for d in HELD_OUT.read_text(encoding="utf-8")[:200_000].split("\n\n")[:-1] if d.strip()]
    tok = Tokenizer(checkpoint / "tokenizer.model")
    ids = torch.tensor([i for doc in docs for i in [tok.eos_id, *tok.encode(doc)]], dtype=torch.long)
    model, gpt_cfg, _ = load_checkpoint(checkpoint, device="cpu")
    block = block or gpt_cfg.block_size
    n = (len(ids) - 1) // block
    x, y = ids[: n * block].view(n, block), ids[1 : n * block + 1].view(n, block)
    nats = 0.0
    with torch.no_grad():
        for b in range(0, n, 32):
            _logits, loss = model(x[b : b + 32], y[b : b + 32])
            nats += float(loss) * y[b : b + 32].numel()
    # the windows cover the first n * block predictions: charge the characters they hold in proportion
    chars = sum(map(len, docs)) * (n * block) / (len(ids) - 1)
    return nats / math.log(2) / chars


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="d8cd222", help="revision whose documents are paragraphs (default: %(default)s, "
                    "main before works became the unit)")
    ap.add_argument("--steps", type=int, default=2000, help="train.max_steps for both sides (small preset: 2000)")
    ap.add_argument("--out", default=str(RESULTS / "creative_train.md"))
    args = ap.parse_args(argv)
    if not STORIES.is_file():
        sys.exit(f"skipped: {STORIES} is absent")
    import torch

    from model.checkpoint import load_checkpoint
    from model.tokenizer import Tokenizer
    from pipeline.config import small
    from pipeline.evaluate import sample_rows, sampling_config
    from pipeline.manifest import read_manifest
    from pipeline.tokenize import tokenize
    from pipeline.tracking import NullTracker
    from pipeline.train import train

    cfg = small()
    cfg.train.max_steps, cfg.train.threads = args.steps, 1
    cfg.train.eval_every = max(1, args.steps // 4)
    torch.set_num_threads(1)
    lines = ["# Training on works against training on paragraphs (TinyStories train sample, `small` preset)", "",
             f"Written by `python -m benchmarks.creative_train --steps {args.steps}` (CPU, 1 thread, machine shared "
             "with other jobs). Same preset, steps and so training tokens on both sides; each side trains its own "
             "tokenizer on its documents.", "",
             "| documents from | documents | train tokens seen | val bits/char (own 5 %) | bits/char, common held-out "
             "text |", "|---|---:|---:|---:|---:|"]
    samples = {}
    with tempfile.TemporaryDirectory() as tmp:
        commit = export_base(args.base, Path(tmp))
        sys.path.insert(0, tmp)
        sides = ((f"base {args.base} ({commit[:7]}): paragraphs", BASE), ("this tree: stories", "pipeline"))
        for tag, package in sides:
            work = Path(tmp) / tag.split(":")[0].replace(" ", "_")
            fil = filtered(package, work)
            tok_m = tokenize(fil, work / "tokenize", cfg.tokenize)
            tr = train(tok_m.path, work / "train", cfg.train, cfg.model, tracker=NullTracker())
            ckpt = tr.output("checkpoint")
            bpc = common_bpc(ckpt)
            docs = read_manifest(fil).stats["docs_kept"]
            own = tr.stats.get("val_bpc", float("nan"))
            lines.append(f"| {tag} | {docs:,} | {tr.stats['tokens_seen']:,} | {own:.3f} | {bpc:.3f} |")
            print(lines[-1], flush=True)
            model, _gpt, _ = load_checkpoint(ckpt, device="cpu")
            tok = Tokenizer(ckpt / "tokenizer.model")
            rows = sample_rows(model, tok, PROMPTS, sampling_config(cfg.evaluate, tok.eos_id, 80, 1234), 1)
            samples[tag] = [r["text"] for r in rows]
    lines.append("")
    for tag, texts in samples.items():
        lines += [f"Samples, {tag} (temperature 0.8, top-k 50, top-p 0.95, 80 tokens):", ""]
        lines += [f"- {json.dumps(t, ensure_ascii=False)}" for t in texts] + [""]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
