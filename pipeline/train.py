"""Train: a GPT on the token shards, with validation in bits per byte, checkpoints, resume and DDP.

    quill stage train --input data/runs/dev/tokenize/manifest.json --out data/runs/dev/train
    quill run --train-processes 2          # DDP through torchrun (flows/launch.py), one rank per GPU

AdamW (fused on CUDA) with linear warm-up and cosine decay, gradient clipping and accumulation,
bf16 autocast on CUDA, optional torch.compile. The checkpoint folder (`checkpoint/`) describes
itself: weights as safetensors, model and train configs, the tokenizer, and the optimizer state
and step, so a killed run resumes from its last checkpoint in the stage's `.partial` folder.

Batches are a pure function of (seed, step, lane): a step's global batch is grad_accum x
world_size micro-batches ("lanes"), lane j drawn by a generator seeded from (seed, step, j) from
the j-th slice of the token stream. So resuming needs no sampler state (the data position is the
step), and a run on N ranks with grad_accum k sees exactly the batches of one process with
grad_accum N*k. Under torchrun (WORLD_SIZE in the environment) the ranks join a process group
(nccl on CUDA, gloo on CPU), the model is wrapped in DistributedDataParallel, evaluation sums
are all-reduced, and only rank 0 writes checkpoints, history, metrics and the manifest.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from model import GPT, GPTConfig, load_checkpoint, load_train_state, resolve_device, save_checkpoint
from model.tokenizer import Tokenizer
from pipeline.config import ModelConfig, TrainConfig
from pipeline.eval.bpb import evaluate_loss
from pipeline.io.tokenshards import TokenShards
from pipeline.manifest import (
    Manifest,
    config_hash,
    current_manifest,
    read_manifest,
    run_stage,
    stage_inputs,
)
from pipeline.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rank:
    """Where this process sits in a torchrun job (0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.min_lr at max_steps; or, with schedule 'wsd', lr
    held until the last decay_frac of the steps and a linear decay to min_lr over those."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "wsd":
        decay_start = max(cfg.warmup_steps, cfg.max_steps - round(cfg.decay_frac * cfg.max_steps))
        progress = (step - decay_start) / max(1, cfg.max_steps - decay_start)
        return cfg.lr - min(1.0, max(0.0, progress)) * (cfg.lr - cfg.min_lr)
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (cfg.lr - cfg.min_lr)


def lane_seed(seed: int, step: int, lane: int) -> int:
    """A well-mixed 63-bit seed for one micro-batch, so neighbouring steps draw unrelated windows."""
    return int(np.random.SeedSequence([seed, step, lane]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def train(tok_manifest: Path, out_dir: Path, cfg: TrainConfig, model_cfg: ModelConfig, tracker: Tracker | None = None,
          force: bool = False) -> Manifest:
    """The train stage: a checkpoint folder, history and loss curve under out_dir (rank 0 writes them)."""
    rank, owned = _join_process_group(cfg.device)
    # The ranks multiply the global batch (see the module docstring): a run on more ranks is another run.
    stage_cfg = {"train": cfg.model_dump(mode="json"), "model": model_cfg.model_dump(mode="json"),
                 "world_size": rank.world_size}
    tracker = (tracker or NullTracker()) if rank.main else NullTracker()  # one run's metrics, not N copies
    work = partial(_train, Path(tok_manifest), cfg=cfg, model_cfg=model_cfg, tracker=tracker, rank=rank)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        if rank.world_size == 1:
            return run_stage("train", out_dir, stage_inputs(tok_manifest, "train"), stage_cfg, work, force=force,
                             keep_partial=True)
        return _train_ranks(tok_manifest, Path(out_dir).resolve(), stage_cfg, work, rank, force)
    finally:
        torch.set_num_threads(threads)
        if owned:
            # A DDP model caught in a reference cycle must go while its group lives: collected at interpreter
            # exit instead, its gloo work aborts the process ("terminate called without an active exception").
            gc.collect()
            dist.destroy_process_group()


def _join_process_group(device_name: str) -> tuple[Rank, bool]:
    """Rank info from torchrun's environment; joins the group unless the caller already did."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Rank(), False
    rank = Rank(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if dist.is_initialized():
        return rank, False
    device = resolve_device(device_name, rank.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, True


def _train_ranks(tok_manifest, out_dir: Path, stage_cfg: dict, work, rank: Rank, force: bool) -> Manifest:
    """Every rank trains; rank 0 alone publishes the stage folder. Rank 0 decides whether to skip."""
    refs = stage_inputs(tok_manifest, "train")
    skip = [None if force else current_manifest(out_dir, "train", refs, config_hash(stage_cfg)) is not None]
    dist.broadcast_object_list(skip, src=0)
    if rank.main:
        m = run_stage("train", out_dir, refs, stage_cfg, work, force=force, keep_partial=True)
    elif not skip[0]:
        work(out_dir.with_name(f"{out_dir.name}.partial"))  # reads a checkpoint there, writes nothing
    # sent, not read back from disk: other nodes need not share rank 0's file system at the end
    sent = [m.model_dump_json() if rank.main else None]
    dist.broadcast_object_list(sent, src=0)
    m = Manifest.model_validate_json(sent[0])
    m.path = out_dir / "manifest.json"
    return m


def autocast_for(device: torch.device, dtype: str):
    """A context factory: bf16 autocast for dtype 'bfloat16' (or 'auto' on CUDA), else nothing."""
    use_bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    if not use_bf16:
        return nullcontext
    return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)


def train_step(model, optimizer, batches, *, lr: float, grad_clip: float, device, autocast=nullcontext,
               world_size: int = 1) -> float:
    """One optimizer step on the mean loss of the micro-batches [(x, y), ...] (of all ranks under DDP).

    Each micro-batch's loss is divided by their number, so k accumulated micro-batches of B rows
    give the gradient of one batch of k*B rows. Returns that mean loss; raises on NaN/inf before
    the weights change.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's matrices may run at a multiple of the schedule
    total = torch.zeros((), device=device)
    for i, (x, y) in enumerate(batches):
        # DDP all-reduces gradients in backward; only the last micro-batch needs to
        sync = model.no_sync() if isinstance(model, DDP) and i < len(batches) - 1 else nullcontext()
        with sync:
            with autocast():
                # from pinned memory (Run.batches on CUDA) the copy overlaps the previous micro-batch's work
                _, loss = model(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
            (loss / len(batches)).backward()
        total += loss.detach()
    if world_size > 1:
        dist.all_reduce(total)  # every rank sees the same loss, so every rank stops on a NaN together
    mean = total.item() / len(batches) / world_size
    if not math.isfinite(mean):
        optimizer.zero_grad(set_to_none=True)
        raise FloatingPointError(f"train: loss is {mean} (lr {lr:.2e}); lower train.lr or check the data")
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return mean


@dataclass
class Run:
    """What one training process holds: the model (and its compiled/DDP wrapper), optimizer, data, history."""

    cfg: TrainConfig
    rank: Rank
    device: torch.device
    autocast: Callable
    model: GPT
    step_model: torch.nn.Module  # what train_step calls: the model, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    lanes: list[tuple[int, TokenShards]]  # this rank's (lane index, reader of that lane's slice)
    val: TokenShards
    token_bytes: np.ndarray
    bytes_per_char: float
    prefix_after: int | None  # see pipeline.eval.bpb: the eos id of a tokenizer with a dummy prefix
    history: list[dict] = field(default_factory=list)

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.rank.world_size * self.model.config.block_size

    def batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # dropout draws from the global RNG: reseed it too, so a resumed step repeats exactly
        torch.manual_seed(lane_seed(self.cfg.seed, step, self.lanes[0][0]))
        T = self.model.config.block_size
        return [shards.sample_batch(torch.Generator().manual_seed(lane_seed(self.cfg.seed, step, j)),
                                    self.cfg.batch_size, T) for j, shards in self.lanes]

    def evaluate(self) -> dict[str, float]:
        return evaluate_loss(self.model, self.val, self.token_bytes, self.model.config.block_size, self.cfg.batch_size,
                             self.device, self.cfg.eval_tokens, self.bytes_per_char, self.autocast, self.prefix_after)


def prefix_after(tok_m: Manifest) -> int | None:
    """The eos id when the stage's tokenizer puts a dummy "▁" before each document (see pipeline.eval.bpb)."""
    tok = Tokenizer(tok_m.output("tokenizer"))
    return tok.eos_id if tok.dummy_prefix else None


def build_run(tok_m: Manifest, cfg: TrainConfig, model_cfg: ModelConfig, vocab_size: int, rank: Rank = Rank()) -> Run:
    device = resolve_device(cfg.device, rank.local_rank)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = GPT(GPTConfig(vocab_size=vocab_size, **model_cfg.model_dump())).to(device)
    optimizer = model.configure_optimizer(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2), device.type,
                                          cfg.optimizer, cfg.muon_lr)
    n_lanes, paths = cfg.grad_accum * rank.world_size, tok_m.output_list("train")
    pin = device.type == "cuda"
    lanes = [(j, TokenShards(paths, rank=j, world_size=n_lanes, pin_memory=pin))
             for j in range(rank.rank * cfg.grad_accum, (rank.rank + 1) * cfg.grad_accum)]
    step_model = torch.compile(model) if cfg.compile else model
    if rank.world_size > 1:
        step_model = DDP(step_model, device_ids=[device.index] if device.type == "cuda" else None)
    return Run(cfg, rank, device, autocast_for(device, cfg.dtype), model, step_model, optimizer, lanes,
               TokenShards(tok_m.output_list("val"), rank=rank.rank, world_size=rank.world_size, pin_memory=pin),
               np.load(tok_m.output("token_bytes"), allow_pickle=False),
               tok_m.stats["bytes_val"] / max(1, tok_m.stats["chars_val"]), prefix_after(tok_m))


def _train(tok_manifest: Path, stage_dir: Path, *, cfg: TrainConfig, model_cfg: ModelConfig, tracker: Tracker,
           rank: Rank = Rank()):
    tok_m = read_manifest(tok_manifest)
    tokenizer = Tokenizer(tok_m.output("tokenizer"))
    run = build_run(tok_m, cfg, model_cfg, tokenizer.vocab_size, rank)
    ckpt_dir = stage_dir / "checkpoint"
    # Saved with the checkpoint; a partial checkpoint made from other data or config is not resumed.
    run_cfg = {"train": cfg.model_dump(mode="json"), "model": model_cfg.model_dump(mode="json"),
               "tokenize_manifest": tok_m.created_at + ":" + str(tok_m.path)}
    start = _resume(ckpt_dir, run_cfg, run)

    def checkpoint(step: int) -> None:
        if rank.main:
            state = {"step": step, "optimizer": run.optimizer.state_dict(), "history": json.dumps(run.history),
                     "world_size": rank.world_size}
            save_checkpoint(ckpt_dir, run.model, run.model.config, tokenizer.path, train_config=run_cfg,
                            train_state=state)

    if rank.main:
        tracker.log_params({"train": cfg.model_dump(), "model": model_cfg.model_dump(),
                            "vocab_size": tokenizer.vocab_size, "n_params": run.model.num_params(),
                            "world_size": rank.world_size})
    monitor = tracker.system_metrics() if rank.main and hasattr(tracker, "system_metrics") else None
    t0 = time.perf_counter()
    try:
        _loop(run, start, checkpoint, tracker)
    finally:
        if monitor is not None:
            monitor.finish()
    checkpoint(cfg.max_steps)
    if not rank.main:
        return {}, {}
    (stage_dir / "history.json").write_text(json.dumps(run.history, indent=1))
    plot_loss_curve(run.history, stage_dir / "loss_curve.png")
    tracker.log_artifact(stage_dir / "loss_curve.png", "plots")
    final = run.history[-1] if run.history else {}
    tokens_seen = cfg.max_steps * run.tokens_per_step
    flops = run.model.flops_per_token() * tokens_seen  # the PaLM/nanoGPT estimate at full context
    # Headline metrics (no prefix: the first chart group in MLflow, next to train_loss), compared across runs.
    tracker.log_metrics({"train_tokens": tokens_seen, "train_flops": flops}, step=cfg.max_steps)
    stats = {
        "steps": cfg.max_steps, "resumed_from": start, "n_params": run.model.num_params(),
        "tokens_seen": tokens_seen, "train_flops": flops, "world_size": rank.world_size, "device": str(run.device),
        "mlflow_run_id": tracker.run_id, "train_seconds": round(time.perf_counter() - t0, 2),
        **{k: v for k, v in final.items() if k.startswith("val_") or k == "train_loss"},
    }
    return {"checkpoint": "checkpoint", "history": "history.json", "loss_curve": "loss_curve.png"}, stats


def _loop(run: Run, start: int, checkpoint: Callable[[int], None], tracker: Tracker) -> None:
    cfg, main = run.cfg, run.rank.main
    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps, desc="train", unit="step",
               dynamic_ncols=True, mininterval=1.0, disable=not main)
    t0 = time.perf_counter()
    with logging_redirect_tqdm():  # log lines print above the bar instead of through it
        _steps(run, bar, start, t0, checkpoint, tracker)
    bar.close()


def _steps(run: Run, bar, start: int, t0: float, checkpoint: Callable[[int], None], tracker: Tracker) -> None:
    cfg, main = run.cfg, run.rank.main
    for step in bar:
        lr = lr_at(step, cfg)
        loss = train_step(run.step_model, run.optimizer, run.batches(step), lr=lr, grad_clip=cfg.grad_clip,
                          device=run.device, autocast=run.autocast, world_size=run.rank.world_size)
        done = step + 1
        tok_s = (done - start) * run.tokens_per_step / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
        record = {"step": done, "train_loss": loss, "lr": lr, "tokens_per_sec": tok_s}
        if done % cfg.eval_every == 0 or done == cfg.max_steps:
            val = run.evaluate()  # every rank: its share of the windows, all-reduced
            record.update({f"val_{k}": v for k, v in val.items() if k != "tokens"})
            if main:  # a log line (not bar.write), so it also reaches the Prefect UI's logs
                log.info("train: step %d: train loss %.4f, val loss %.4f, val bpb %.4f", done, loss, val["loss"],
                         val["bpb"])
        run.history.append(record)
        if main:
            tracker.log_metrics({k.replace("_", "/", 1) if k.startswith("val_") else k: v
                                 for k, v in record.items() if k != "step"}, step=done)
        if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < cfg.max_steps:
            checkpoint(done)


def _resume(ckpt_dir: Path, run_cfg: dict, run: Run) -> int:
    """Load the last checkpoint of an interrupted run in this partial folder; returns the start step."""
    state = load_train_state(ckpt_dir)  # also from `.checkpoint.old`, left by a save killed between its renames
    start, world = 0, run.rank.world_size
    if state:
        loaded, _, saved_cfg = load_checkpoint(ckpt_dir, device=str(run.device))
        if saved_cfg == run_cfg:
            run.model.load_state_dict(loaded.state_dict())
            run.optimizer.load_state_dict(state["optimizer"])
            run.history.extend(json.loads(state["history"]))
            start = int(state["step"])
            if state.get("world_size", 1) != world:
                log.warning("train: checkpoint made by %s ranks, resuming on %d: the global batch changes",
                            state.get("world_size", 1), world)
            log.info("train: resuming from step %d (%s)", start, ckpt_dir)
        else:
            log.info("train: ignoring partial checkpoint in %s (made with other data or config)", ckpt_dir)
    if world > 1:
        starts = [None] * world
        dist.all_gather_object(starts, start)
        if len(set(starts)) > 1:
            raise RuntimeError(f"train: ranks found different checkpoints (start steps {starts}); the stage "
                               "folder must be on storage that every node sees")
    return start


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
