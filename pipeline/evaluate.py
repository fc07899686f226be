"""Evaluate: held-out loss, what the model writes, its biases, and where it looks, in one report.

    quill stage evaluate --input data/runs/dev/train/manifest.json --out data/runs/dev/evaluate

- validation shards (found through the train manifest's input, the tokenize manifest): loss,
  perplexity, bits per byte and bits per character;
- samples from a prompt set (cfg.prompts, or cfg.prompt_file), several per prompt: distinct-1/2/3,
  self-BLEU, seq-rep-4, mean length, share stopped on eos, and memorisation: the share of the
  samples' n-grams found verbatim in the training shards (pipeline/eval/metrics.py);
- bias and safety: share of samples the filter stage's offensive-content classifier flags, the
  stereotype-pair probe and the sentiment gap across demographic prompt groups
  (pipeline/eval/bias_probe.py);
- an attention heat-map (heads averaged, one panel per layer) of the first sample.

Every prompt is read as the start of a document (after an eos, as in the training stream).
Sampling is seeded (cfg.seed), so the same checkpoint and config give the same samples.
Writes metrics.json (flat numbers), samples.jsonl, bias.json (per-pair scores, per-group
sentiment, demographic continuations), attention_map.png, report.md and a self-contained
report.html (metrics, loss curve, attention map and samples, images inlined).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from model import generate, load_checkpoint, resolve_device
from model.sampling import SamplingConfig
from model.tokenizer import Tokenizer
from pipeline.config import EvaluateConfig
from pipeline.eval import bias_probe
from pipeline.eval import metrics as em
from pipeline.eval.bpb import evaluate_loss
from pipeline.eval.report import plot_attention, render_html, render_markdown
from pipeline.io.tokenshards import TokenShards
from pipeline.manifest import Manifest, read_manifest, run_stage, stage_inputs
from pipeline.text.offensive.classifier import offensive_scores
from pipeline.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)
BATCH_ROWS = 64  # prompts generated together; more only costs memory


def evaluate(train_manifest: Path, out_dir: Path, cfg: EvaluateConfig, force: bool = False,
             tracker: Tracker | None = None) -> Manifest:
    """Run the evaluation stage; with a tracker, its output files are logged under `evaluation/`."""
    return run_stage("evaluate", out_dir, stage_inputs(train_manifest, "evaluate"), cfg,
                     lambda tmp: _evaluate(Path(train_manifest), tmp, cfg, tracker or NullTracker()), force=force)


def load_prompts(cfg: EvaluateConfig) -> list[str]:
    """cfg.prompts, or the prompt file's: a JSON list, or one prompt per line ('#' lines are comments)."""
    if cfg.prompt_file is None:
        prompts = list(cfg.prompts)
    else:
        text = bias_probe.data_file(cfg.prompt_file, "prompts.txt").read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            prompts = [str(p) for p in json.loads(text)]
        else:
            prompts = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"evaluate: no prompts (prompts={cfg.prompts}, prompt_file={cfg.prompt_file})")
    return prompts


SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "no_repeat_ngram")


def sampling_config(cfg: EvaluateConfig, eos_id: int, max_new_tokens: int, seed: int) -> SamplingConfig:
    """The shared sampling defaults (model/sampling.py) with the settings this config gives."""
    settings = {name: getattr(cfg, name) for name in SAMPLING_FIELDS}
    return SamplingConfig.from_settings(settings, max_new_tokens=max_new_tokens, seed=seed, eos_id=eos_id)


def sample_rows(model, tok: Tokenizer, prompts: list[str], sampling: SamplingConfig, n: int,
                use_cache: bool = True) -> list[dict]:
    """n samples of each prompt: {prompt, text, new_tokens, stopped_on_eos}, in prompt order.

    Rows go to generate() BATCH_ROWS at a time, batch b with seed + b, so batches draw different
    random numbers. With no stop strings, a row shorter than max_new_tokens ended on eos.
    """
    ids = [tok.encode_prompt(p) for p in prompts for _ in range(n)]
    outs: list[list[int]] = []
    for b, start in enumerate(range(0, len(ids), BATCH_ROWS)):
        seed = None if sampling.seed is None else sampling.seed + b
        outs += generate(model, ids[start : start + BATCH_ROWS], replace(sampling, seed=seed), use_cache=use_cache)
    return [{"prompt": prompts[i // n], "text": prompts[i // n] + tok.decode_continuation(ids[i], new),
             "new_tokens": new, "stopped_on_eos": len(new) < sampling.max_new_tokens} for i, new in enumerate(outs)]


def sample_metrics(samples: list[dict], train_shards: list[Path], cfg: EvaluateConfig) -> dict[str, float]:
    new = [s["new_tokens"] for s in samples]
    # diversity on the words each sample added (comparable across tokenizers); memorisation on token ids
    said = [em.words(s["text"][len(s["prompt"]):]) for s in samples]
    rate = em.memorised_share(new, TokenShards(train_shards).arrays, cfg.novelty_n)
    return {**{f"distinct_{n}": em.distinct_n(said, n) for n in (1, 2, 3)},
            "self_bleu": em.self_bleu(said), "seq_rep_4": em.seq_rep_n(said, 4), "mean_length": em.mean_length(new),
            "eos_stop_rate": em.share(s["stopped_on_eos"] for s in samples),
            "memorised_ngram_rate": rate, "novelty": 1.0 - rate}


def bias_metrics(model, tok: Tokenizer, cfg: EvaluateConfig) -> tuple[dict[str, float], dict]:
    """Stereotype probe and sentiment gap: (metrics, details for bias.json)."""
    pairs = bias_probe.load_pairs(cfg.stereotype_pairs_file)
    rows = bias_probe.score_pairs(pairs, bias_probe.model_scorer(model, tok),
                                  lambda p: bias_probe.pair_covered(tok.sp, p, cfg.stereotype_max_pieces))
    metrics = bias_probe.stereotype_preference(rows)
    groups = bias_probe.load_group_prompts(cfg.demographic_prompts_file)
    flat = [p for prompts in groups.values() for p in prompts]
    sampling = sampling_config(cfg, tok.eos_id, cfg.bias_max_new_tokens, cfg.seed + 1)
    continuations = sample_rows(model, tok, flat, sampling, cfg.bias_samples_per_prompt)
    by_group = {g: [r["text"][len(r["prompt"]):] for r in continuations if r["prompt"] in prompts]
                for g, prompts in groups.items()}
    details = {"pairs": rows, "continuations": [{"prompt": r["prompt"], "text": r["text"]} for r in continuations]}
    if (scorer := bias_probe.vader_scorer()) is not None:
        metrics["sentiment_gap"], details["sentiment_by_group"] = bias_probe.sentiment_gap(by_group, scorer)
    return metrics, details


def _evaluate(train_manifest: Path, stage_dir: Path, cfg: EvaluateConfig, tracker: Tracker) -> tuple[dict, dict]:
    train_m = read_manifest(train_manifest)
    tok_m = read_manifest(train_m.inputs[0].path)
    ckpt = train_m.output("checkpoint")
    device = resolve_device("auto")
    model, gpt_cfg, _ = load_checkpoint(ckpt, device=str(device))
    tok = Tokenizer(ckpt / "tokenizer.model")
    val = evaluate_loss(
        model, TokenShards(tok_m.output_list("val")), np.load(tok_m.output("token_bytes"), allow_pickle=False),
        gpt_cfg.block_size, 16, device, None, tok_m.stats["bytes_val"] / max(1, tok_m.stats["chars_val"]),
        prefix_after=tok.eos_id if tok.dummy_prefix else None,
    )
    samples = sample_rows(model, tok, load_prompts(cfg), sampling_config(cfg, tok.eos_id, cfg.max_new_tokens, cfg.seed),
                          cfg.samples_per_prompt)
    bias, details = bias_metrics(model, tok, cfg)
    texts = [s["text"] for s in samples] + [c["text"] for c in details["continuations"]]
    metrics = {"val_loss": val["loss"], "val_perplexity": val["perplexity"], "val_bpb": val["bpb"],
               "val_bpc": val["bpc"], "val_tokens": val["tokens"],
               **sample_metrics(samples, tok_m.output_list("train"), cfg),
               "offensive_sample_rate": em.share(offensive_scores(texts, cfg.offensive_classifier_threshold)
                                                 >= cfg.offensive_threshold),
               **bias}
    first = samples[0]
    plot_attention(model, tok, tok.encode_prompt(first["prompt"]) + first["new_tokens"],
                   stage_dir / "attention_map.png", min(cfg.attention_tokens, gpt_cfg.block_size))
    _write_outputs(stage_dir, metrics, samples, details, train_m)
    outputs = {"metrics": "metrics.json", "samples": "samples.jsonl", "bias": "bias.json",
               "attention_map": "attention_map.png", "report": "report.md", "report_html": "report.html"}
    for name in outputs.values():
        tracker.log_artifact(stage_dir / name, "evaluation")
    log.info("evaluate: val bpb %.4f, distinct-2 %.3f, offensive %.3f, stereotype preference %.3f", metrics["val_bpb"],
             metrics["distinct_2"], metrics["offensive_sample_rate"], metrics["stereotype_preference"])
    return outputs, metrics


def _write_outputs(stage_dir: Path, metrics: dict, samples: list[dict], details: dict, train_m: Manifest) -> None:
    (stage_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with open(stage_dir / "samples.jsonl", "w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(json.dumps({k: v for k, v in s.items() if k != "new_tokens"}, ensure_ascii=False) + "\n")
    (stage_dir / "bias.json").write_text(json.dumps(_finite(details), indent=1, ensure_ascii=False), encoding="utf-8")
    (stage_dir / "report.md").write_text(render_markdown(metrics, samples, details), encoding="utf-8")
    loss_curve = train_m.output("loss_curve") if "loss_curve" in train_m.outputs else None
    images = {"Loss curve": loss_curve, "Attention of the first sample": stage_dir / "attention_map.png"}
    (stage_dir / "report.html").write_text(render_html(metrics, samples, details, images), encoding="utf-8")


def _finite(obj):
    """nan (a sentence too long to score) as null, so bias.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return [_finite(v) for v in obj] if isinstance(obj, list) else obj
