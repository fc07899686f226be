"""Validation loss in tokenizer-independent units: bits per byte and bits per character.

bits/byte = (summed cross-entropy in nats) / ln 2 / (UTF-8 bytes of the predicted tokens), with
the bytes of each target token from the tokenizer's `token_bytes` table (0 for control tokens, so
eos costs are counted but add no bytes). Bits per character scales that by the validation text's
bytes per character, exact when the whole split is evaluated.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data import TokenShards


@torch.no_grad()
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
) -> dict[str, float]:
    was_training = model.training
    model.eval()
    tb = torch.as_tensor(token_bytes, dtype=torch.float64, device=device)
    nats, n_tokens, n_bytes = 0.0, 0, 0.0
    for x, y in shards.sequential(batch_size, block_size, max_tokens):
        x, y = x.to(device), y.to(device)
        with autocast():
            logits, _ = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        nats += loss.item()
        n_tokens += y.numel()
        n_bytes += tb[y].sum().item()
    if was_training:
        model.train()
    loss = nats / n_tokens
    out = {"loss": loss, "perplexity": math.exp(min(loss, 50)), "bpb": nats / math.log(2) / max(n_bytes, 1.0)}
    if bytes_per_char:
        out["bpc"] = out["bpb"] * bytes_per_char
    out["tokens"] = float(n_tokens)
    return out
