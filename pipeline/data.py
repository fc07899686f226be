"""Token shard reader for training and evaluation.

    shards = TokenShards(tok_manifest.output_list("train"))
    x, y = shards.sample_batch(rng, batch_size=16, block_size=128)

Random windows of `block_size + 1` tokens for training; a deterministic sequential pass over
validation for exact evaluation. Data-parallel ranks draw from disjoint window streams because
each rank seeds its generator with (seed, rank).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq
import torch


class TokenShards:
    def __init__(self, paths: list[Path]):
        if not paths:
            raise ValueError("no token shards given")
        arrays = [pq.read_table(p, columns=["tokens"], memory_map=True).column("tokens").to_numpy() for p in paths]
        self.tokens = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]

    def __len__(self) -> int:
        return len(self.tokens)

    def _check(self, block_size: int) -> None:
        if len(self.tokens) < block_size + 1:
            raise ValueError(f"only {len(self.tokens)} tokens, fewer than one window of block_size+1={block_size + 1}")

    def sample_batch(self, gen: torch.Generator, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: x (B, T) and y = x shifted by one (B, T), int64."""
        self._check(block_size)
        starts = torch.randint(0, len(self.tokens) - block_size, (batch_size,), generator=gen).numpy()
        windows = np.stack([self.tokens[s : s + block_size + 1] for s in starts]).astype(np.int64)
        t = torch.from_numpy(windows)
        return t[:, :-1], t[:, 1:]

    def sequential(self, batch_size: int, block_size: int, max_tokens: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping windows from the start, in order; the same batches every call."""
        self._check(block_size)
        n = len(self.tokens) - 1
        if max_tokens is not None:
            n = min(n, max_tokens)
        n_windows = max(1, n // block_size)
        starts = [i * block_size for i in range(n_windows)]
        for i in range(0, n_windows, batch_size):
            chunk = np.stack([self.tokens[s : s + block_size + 1] for s in starts[i : i + batch_size]]).astype(np.int64)
            t = torch.from_numpy(chunk)
            yield t[:, :-1], t[:, 1:]
