"""Train: a GPT on the token shards, with validation in bits per byte, checkpoints and resume.

    quill stage train --input data/runs/dev/tokenize/manifest.json --out data/runs/dev/train

AdamW (fused on CUDA) with linear warm-up and cosine decay, gradient clipping and accumulation,
bf16 autocast on CUDA, optional torch.compile. The checkpoint folder (`checkpoint/`) describes
itself: weights as safetensors, model and train configs, the tokenizer, and the optimizer/RNG state
so a killed run resumes from its last checkpoint in the stage's `.partial` folder.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model import GPT, GPTConfig, load_checkpoint, load_train_state, save_checkpoint
from model.tokenizer import Tokenizer
from pipeline.config import ModelConfig, TrainConfig
from pipeline.data import TokenShards
from pipeline.loss_eval import evaluate_loss
from pipeline.manifest import Manifest, input_refs, read_manifest, run_stage
from pipeline.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.min_lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (cfg.lr - cfg.min_lr)


def train(
    tok_manifest: Path,
    out_dir: Path,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    tracker: Tracker | None = None,
    force: bool = False,
) -> Manifest:
    stage_cfg = {"train": cfg.model_dump(mode="json"), "model": model_cfg.model_dump(mode="json")}
    work = partial(_train, Path(tok_manifest), cfg=cfg, model_cfg=model_cfg, tracker=tracker or NullTracker())
    return run_stage("train", out_dir, input_refs([tok_manifest]), stage_cfg, work, force=force, keep_partial=True)


def _autocast(device: torch.device, dtype: str):
    use_bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    if not use_bf16:
        return nullcontext
    return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)


def _train(tok_manifest: Path, stage_dir: Path, *, cfg: TrainConfig, model_cfg: ModelConfig, tracker: Tracker):
    tok_m = read_manifest(tok_manifest)
    tokenizer = Tokenizer(tok_m.output("tokenizer"))
    train_data, val_data = TokenShards(tok_m.output_list("train")), TokenShards(tok_m.output_list("val"))
    token_bytes = np.load(tok_m.output("token_bytes"), allow_pickle=False)
    bytes_per_char = tok_m.stats["bytes_val"] / max(1, tok_m.stats["chars_val"])
    device = resolve_device(cfg.device)
    autocast = _autocast(device, cfg.dtype)

    torch.manual_seed(cfg.seed)
    gpt_cfg = GPTConfig(vocab_size=tokenizer.vocab_size, **model_cfg.model_dump())
    model = GPT(gpt_cfg).to(device)
    optimizer = model.configure_optimizer(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2), device.type)
    gen = torch.Generator().manual_seed(cfg.seed)
    ckpt_dir = stage_dir / "checkpoint"
    # Saved with the checkpoint; a partial checkpoint made from other data or config is not resumed.
    run_cfg = {"train": cfg.model_dump(mode="json"), "model": model_cfg.model_dump(mode="json"),
               "tokenize_manifest": tok_m.created_at + ":" + str(tok_m.path)}
    history: list[dict] = []
    start = _resume(ckpt_dir, run_cfg, model, optimizer, gen, history, device)
    step_fn = torch.compile(model) if cfg.compile else model
    tracker.log_params({"train": cfg.model_dump(), "model": model_cfg.model_dump(), "vocab_size": tokenizer.vocab_size,
                        "n_params": model.num_params()})

    def evaluate() -> dict[str, float]:
        return evaluate_loss(model, val_data, token_bytes, gpt_cfg.block_size, cfg.batch_size, device,
                             cfg.eval_tokens, bytes_per_char, autocast)

    def checkpoint(step: int) -> None:
        state = {"step": step, "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
                 "torch_rng": torch.get_rng_state(), "history": json.dumps(history)}
        save_checkpoint(ckpt_dir, model, gpt_cfg, tokenizer.path, train_config=run_cfg, train_state=state)

    tokens_per_step = cfg.batch_size * cfg.grad_accum * gpt_cfg.block_size
    model.train()
    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps, desc="train", unit="step",
               dynamic_ncols=True, mininterval=1.0)
    t0, loss_acc = time.perf_counter(), 0.0
    for step in bar:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_acc = 0.0
        for _ in range(cfg.grad_accum):
            x, y = train_data.sample_batch(gen, cfg.batch_size, gpt_cfg.block_size)
            with autocast():
                _, loss = step_fn(x.to(device), y.to(device))
            (loss / cfg.grad_accum).backward()
            loss_acc += loss.item() / cfg.grad_accum
        if not math.isfinite(loss_acc):
            raise FloatingPointError(f"train: loss is {loss_acc} at step {step} (lr {lr:.2e}); lower train.lr or check the data")
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        elapsed = time.perf_counter() - t0
        tok_s = (done - start) * tokens_per_step / max(elapsed, 1e-9)
        bar.set_postfix(loss=f"{loss_acc:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
        record = {"step": done, "train_loss": loss_acc, "lr": lr, "tokens_per_sec": tok_s}
        if done % cfg.eval_every == 0 or done == cfg.max_steps:
            val = evaluate()
            record.update({f"val_{k}": v for k, v in val.items() if k != "tokens"})
            bar.write(f"step {done}: train loss {loss_acc:.4f}, val loss {val['loss']:.4f}, val bpb {val['bpb']:.4f}")
        history.append(record)
        tracker.log_metrics({k.replace("_", "/", 1) if k.startswith("val_") else k: v
                             for k, v in record.items() if k != "step"}, step=done)
        if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < cfg.max_steps:
            checkpoint(done)
    bar.close()
    checkpoint(cfg.max_steps)
    final = history[-1] if history else {}
    (stage_dir / "history.json").write_text(json.dumps(history, indent=1))
    plot_loss_curve(history, stage_dir / "loss_curve.png")
    tracker.log_artifact(stage_dir / "loss_curve.png", "plots")
    stats = {
        "steps": cfg.max_steps,
        "resumed_from": start,
        "n_params": model.num_params(),
        "tokens_seen": cfg.max_steps * tokens_per_step,
        "device": str(device),
        "mlflow_run_id": tracker.run_id,
        "train_seconds": round(time.perf_counter() - t0, 2),
        **{k: v for k, v in final.items() if k.startswith("val_") or k == "train_loss"},
    }
    outputs = {"checkpoint": "checkpoint", "history": "history.json", "loss_curve": "loss_curve.png"}
    return outputs, stats


def _resume(ckpt_dir: Path, run_cfg: dict, model, optimizer, gen: torch.Generator, history: list, device) -> int:
    """Load the last checkpoint of an interrupted run in this partial folder; returns the start step."""
    state = load_train_state(ckpt_dir) if ckpt_dir.exists() else None
    if not state:
        return 0
    loaded, _, saved_cfg = load_checkpoint(ckpt_dir, device=str(device))
    if saved_cfg != run_cfg:
        log.info("train: ignoring partial checkpoint in %s (made with other data or config)", ckpt_dir)
        return 0
    model.load_state_dict(loaded.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    history.extend(json.loads(state["history"]))
    log.info("train: resuming from step %d (%s)", state["step"], ckpt_dir)
    return int(state["step"])


def plot_loss_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot([h["step"] for h in history], [h["train_loss"] for h in history], label="train", lw=1)
    val = [h for h in history if "val_loss" in h]
    if val:
        ax.plot([h["step"] for h in val], [h["val_loss"] for h in val], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
