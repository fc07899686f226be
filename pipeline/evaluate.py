"""Evaluate: held-out loss in bits per byte and generated samples from a prompt set.

    quill stage evaluate --input data/runs/dev/train/manifest.json --out data/runs/dev/evaluate

The validation shards are found through the train manifest's own input (the tokenize manifest).
Writes `metrics.json`, `samples.jsonl` and `report.md`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from model import SamplingConfig, generate, load_checkpoint
from model.tokenizer import Tokenizer
from pipeline.config import EvaluateConfig
from pipeline.data import TokenShards
from pipeline.loss_eval import evaluate_loss
from pipeline.manifest import Manifest, input_refs, read_manifest, run_stage
from pipeline.train import resolve_device

log = logging.getLogger(__name__)


def evaluate(train_manifest: Path, out_dir: Path, cfg: EvaluateConfig, force: bool = False) -> Manifest:
    return run_stage("evaluate", out_dir, input_refs([train_manifest]), cfg,
                     lambda tmp: _evaluate(Path(train_manifest), tmp, cfg), force=force)


def distinct_n(samples: list[list[int]], n: int) -> float:
    """Share of unique n-grams among all n-grams of the samples (0 when there are none)."""
    grams = [tuple(s[i : i + n]) for s in samples for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def sample_texts(ckpt_dir: Path, prompts: list[str], cfg: EvaluateConfig, n: int) -> list[dict]:
    model, _, _ = load_checkpoint(ckpt_dir)
    tok = Tokenizer(ckpt_dir / "tokenizer.model")
    sampling = SamplingConfig(
        strategy="greedy" if cfg.temperature == 0 else "sample", max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature or 1.0, top_k=cfg.top_k, top_p=cfg.top_p, seed=cfg.seed, eos_id=tok.eos_id,
    )
    prompt_ids = [tok.encode(p) for p in prompts for _ in range(n)]
    outs = generate(model, prompt_ids, sampling)
    rows = []
    for i, (ids, new) in enumerate(zip(prompt_ids, outs)):
        prompt = prompts[i // n]
        rows.append({"prompt": prompt, "text": prompt + tok.decode(new), "new_tokens": new,
                     "stopped_on_eos": len(new) < cfg.max_new_tokens})
    return rows


def _evaluate(train_manifest: Path, stage_dir: Path, cfg: EvaluateConfig) -> tuple[dict, dict]:
    train_m = read_manifest(train_manifest)
    tok_m = read_manifest(train_m.inputs[0].path)
    ckpt = train_m.output("checkpoint")
    model, gpt_cfg, _ = load_checkpoint(ckpt)
    device = resolve_device("auto")
    model.to(device)
    val = evaluate_loss(
        model, TokenShards(tok_m.output_list("val")), np.load(tok_m.output("token_bytes"), allow_pickle=False),
        gpt_cfg.block_size, 16, device, None, tok_m.stats["bytes_val"] / max(1, tok_m.stats["chars_val"]),
    )
    torch.manual_seed(cfg.seed)
    samples = sample_texts(ckpt, cfg.prompts, cfg, cfg.samples_per_prompt)
    new = [s["new_tokens"] for s in samples]
    metrics = {
        "val_loss": val["loss"], "val_perplexity": val["perplexity"], "val_bpb": val["bpb"], "val_bpc": val["bpc"],
        "val_tokens": val["tokens"],
        "distinct_1": distinct_n(new, 1), "distinct_2": distinct_n(new, 2), "distinct_3": distinct_n(new, 3),
        "mean_length": float(np.mean([len(s) for s in new])) if new else 0.0,
        "eos_stop_rate": float(np.mean([s["stopped_on_eos"] for s in samples])) if samples else 0.0,
    }
    (stage_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with open(stage_dir / "samples.jsonl", "w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(json.dumps({k: v for k, v in s.items() if k != "new_tokens"}, ensure_ascii=False) + "\n")
    (stage_dir / "report.md").write_text(render_report(metrics, samples), encoding="utf-8")
    log.info("evaluate: val bpb %.4f, val loss %.4f", metrics["val_bpb"], metrics["val_loss"])
    return {"metrics": "metrics.json", "samples": "samples.jsonl", "report": "report.md"}, metrics


def render_report(metrics: dict, samples: list[dict]) -> str:
    lines = ["# Evaluation", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    lines += ["", "## Samples", ""]
    for s in samples:
        lines += [f"**{s['prompt']}**", "", "> " + s["text"].replace("\n", "\n> "), ""]
    return "\n".join(lines)
