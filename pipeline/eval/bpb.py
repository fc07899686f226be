"""Validation loss in tokenizer-independent units: bits per byte and bits per character.

bits/byte = (summed cross-entropy in nats) / ln 2 / (UTF-8 bytes of the predicted tokens), with
the bytes of each target token from the tokenizer's `token_bytes` table (0 for control tokens, so
eos costs are counted but add no bytes). A tokenizer with SentencePiece's dummy prefix (made before Quill
turned it off) starts every document with a "▁" the text does not hold: `prefix_after` (its eos id)
takes that byte off each target that follows eos, so the count is the text's bytes either way. Bits per
character scales that by the validation text's bytes per character, exact when the whole split is evaluated.

Under data parallelism each rank reads its share of the fixed window grid (a reader made with
rank/world_size) and the sums are all-reduced, so every rank gets the single-process figures.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from pipeline.io.tokenshards import TokenShards


@torch.no_grad()
def loss_sums(model, shards: TokenShards, token_bytes: np.ndarray, block_size: int, batch_size: int,
              device: torch.device, max_tokens: int | None = None, autocast=nullcontext,
              prefix_after: int | None = None) -> tuple[float, int, float]:
    """(summed nats, predicted tokens, their bytes) over the reader's share of the sequential pass."""
    nats, n_tokens, n_bytes = 0.0, 0, 0.0
    for x, y in shards.sequential(batch_size, block_size, max_tokens):
        with autocast():
            logits, _ = model(x.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        nats += F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
        n_tokens += y.numel()
        n_bytes += float(token_bytes[y.cpu().numpy()].sum())  # on the host: MPS has no float64
        if prefix_after is not None:
            n_bytes -= float((x == prefix_after).sum())  # each document's dummy "▁"
    return nats, n_tokens, n_bytes


def evaluate_loss(
    model: torch.nn.Module,
    shards: TokenShards,
    token_bytes: np.ndarray,
    block_size: int,
    batch_size: int,
    device: torch.device,
    max_tokens: int | None = None,
    bytes_per_char: float | None = None,
    autocast=nullcontext,
    prefix_after: int | None = None,
) -> dict[str, float]:
    """loss (nats/token), perplexity, bpb, bpc (when bytes_per_char is given) and the token count."""
    was_training = model.training
    model.eval()
    try:
        sums = loss_sums(model, shards, token_bytes, block_size, batch_size, device, max_tokens, autocast, prefix_after)
    finally:
        model.train(was_training)
    if getattr(shards, "world_size", 1) > 1:
        t = torch.tensor(sums, dtype=torch.float64, device=device)  # NCCL reduces only device tensors
        dist.all_reduce(t)  # the ranks' shares are disjoint and together the whole pass
        sums = tuple(t.tolist())
    nats, n_tokens, n_bytes = sums
    loss = nats / max(n_tokens, 1)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 50)), "bpb": nats / math.log(2) / max(n_bytes, 1.0)}
    if bytes_per_char:
        out["bpc"] = out["bpb"] * bytes_per_char
    out["tokens"] = float(n_tokens)
    return out
