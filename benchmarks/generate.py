"""Benchmark of generation: tokens/s with the KV cache against full recompute, same model, same run.

    .venv/bin/python benchmarks/generate.py                        # 512 new tokens, batch 1 and 16
    .venv/bin/python benchmarks/generate.py --new-tokens 128 --batches 1 4 --repeat 3 --threads 1

The model has the `small` preset's shape (pipeline.config.small().model: 4 layers, 4 heads, width
128) with a 2048-token vocabulary, randomly initialised (weights do not change the cost), except for
block_size: the preset's 128 positions cannot hold a prompt plus 512 new tokens, and past
block_size generate() drops the cache and recomputes cropped contexts, so both runs would measure
recompute. block_size is therefore raised to 1024; with the default rope encoding that changes no
weight, only the length of the rotary tables. Both ways run the same code path, model.generate's
greedy decoding with eos disabled, so every row makes exactly --new-tokens tokens:
- cache:     prefill the prompts once, then one token per row per step against the KV cache;
- recompute: every step runs the whole context (prompt + tokens so far) through the model.
Prompts are random ids of different lengths (8 to 24 tokens), seeded, so batches also exercise the
ragged-prompt path. Each figure is the best of --repeat timed runs after one short warm-up run
(the machine may be shared and noisy). Target: cache >= 5x recompute at batch 1. The default run
takes about 8 minutes on 2 busy CPU cores, nearly all of it batch-16 recompute; on a shared machine
--threads 1 gives steadier figures (spin-waiting threads fight the other processes).
"""

import os
import sys

# benchmarks/ holds tokenize.py, which would shadow the standard library's tokenize (inspect imports
# it): drop this folder from the path, and make the repository importable instead.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.dirname(HERE))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from model import GPT, GPTConfig, SamplingConfig, generate  # noqa: E402
from pipeline.config import small  # noqa: E402

VOCAB = 2048


def build_model(block_size: int, device: str) -> GPT:
    shape = small().model.model_dump()
    shape.update(vocab_size=VOCAB, block_size=block_size)
    torch.manual_seed(0)
    return GPT(GPTConfig(**shape)).to(device).eval()


def prompts(batch: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 25, (batch,), generator=gen).tolist() if batch > 1 else [16]
    return [torch.randint(4, VOCAB, (n,), generator=gen).tolist() for n in lengths]


def timed(model: GPT, ids: list[list[int]], new_tokens: int, use_cache: bool, repeat: int) -> float:
    """Best seconds of `repeat` runs of greedy generation of exactly new_tokens per row."""
    cfg = SamplingConfig(strategy="greedy", max_new_tokens=new_tokens, top_k=None, top_p=None, eos_id=None)
    generate(model, ids, dataclasses.replace(cfg, max_new_tokens=8), use_cache=use_cache)  # warm-up
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = generate(model, ids, cfg, use_cache=use_cache)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        assert all(len(o) == new_tokens for o in out)
    return best


def run(args) -> list[dict]:
    model = build_model(args.block_size, args.device)
    if max(map(len, prompts(max(args.batches)))) + args.new_tokens > args.block_size:
        raise SystemExit(f"--block-size {args.block_size} is too small for 24 prompt + {args.new_tokens} new tokens")
    rows = []
    for batch in args.batches:
        ids = prompts(batch)
        secs = {way: timed(model, ids, args.new_tokens, way == "cache", args.repeat) for way in ("cache", "recompute")}
        tok_s = {way: batch * args.new_tokens / s for way, s in secs.items()}
        rows.append({"batch": batch, "new_tokens": args.new_tokens, "cache_tok_s": tok_s["cache"],
                     "recompute_tok_s": tok_s["recompute"], "speedup": tok_s["cache"] / tok_s["recompute"],
                     "cache_s": secs["cache"], "recompute_s": secs["recompute"]})
        print_row(rows[-1])
    return rows


def print_row(r: dict) -> None:
    print(f"{r['batch']:>5} {r['new_tokens']:>10} {r['cache_tok_s']:>13.1f} {r['recompute_tok_s']:>15.1f} "
          f"{r['speedup']:>8.2f}x   ({r['cache_s']:.2f} s vs {r['recompute_s']:.2f} s)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=512, help="tokens generated per row")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="batch sizes to time")
    p.add_argument("--block-size", type=int, default=1024, help="context length of the benchmark model")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per figure; the best is kept")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = small().model
    print(f"model: small preset shape ({shape.n_layer} layers, {shape.n_head} heads, width {shape.n_embd}), "
          f"vocab {VOCAB}, block_size {args.block_size}; device {args.device}, {torch.get_num_threads()} threads")
    print(f"{'batch':>5} {'new tokens':>10} {'cache tok/s':>13} {'recompute tok/s':>15} {'speedup':>9}")
    rows = run(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": args.device, "threads": torch.get_num_threads(), "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
