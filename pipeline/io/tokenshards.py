"""Token shard reader for training and evaluation: memory-mapped, zero-copy, rank-aware.

    shards = TokenShards(tok_manifest.output_list("train"), rank=rank, world_size=world_size)
    x, y = shards.sample_batch(gen, batch_size=16, block_size=128)        # random windows
    for x, y in shards.sequential(batch_size=16, block_size=128): ...     # exact evaluation
    TokenShards(paths, pin_memory=True)   # batches in pinned memory, for asynchronous copies to a GPU

The Parquet shards are zstd-compressed and so cannot be memory-mapped (see pipeline/tokenize.py
for the layout). On first open each shard is unpacked, one row group at a time, into an
uncompressed `.npy` sidecar in `.mmap/` beside it (or, when that folder is read-only, under
$QUILL_CACHE_DIR or ~/.cache/quill/tokens), written atomically and named by a key of the
shard's size, mtime and row count, so a rewritten shard gets a fresh sidecar. Reads are then
`np.load(mmap_mode="r")`: the page cache holds the corpus, not the process, and a window is a
slice of a mapped array. Several ranks opening at once may each unpack a shard; the atomic
rename makes the last one win with identical bytes.

The split's shards form one token stream (a window may cross a shard boundary; documents are
separated by eos either way). Data-parallel ranks never read the same windows, by construction:
random windows of rank r lie wholly inside the r-th of `world_size` contiguous, disjoint slices
of the stream, and the sequential pass deals the fixed grid of windows round-robin (window i to
rank i mod world_size), so the ranks' passes together are exactly the single-process pass. Give
each rank its own generator (e.g. seeded with (seed, rank)).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

CACHE_FOLDER = ".mmap"


def _cache_key(path: Path, pf: pq.ParquetFile) -> str:
    # Size, mtime and row count: cheap to check on every open, unlike hashing a multi-GB shard.
    st = path.stat()
    raw = f"{st.st_size}:{st.st_mtime_ns}:{pf.metadata.num_rows}:{pf.schema_arrow.field('tokens').type}"
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


def _fallback_dir(path: Path) -> Path:
    root = Path(os.environ.get("QUILL_CACHE_DIR", Path.home() / ".cache" / "quill" / "tokens"))
    return root / hashlib.blake2b(str(path.resolve().parent).encode(), digest_size=8).hexdigest()


def _unpack(pf: pq.ParquetFile, target: Path, stem: str) -> None:
    """Write the shard's tokens as .npy, one row group at a time, then rename into place."""
    dtype = np.dtype(pf.schema_arrow.field("tokens").type.to_pandas_dtype())
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(pf.metadata.num_rows,))
        pos = 0
        for i in range(pf.num_row_groups):
            chunk = pf.read_row_group(i, columns=["tokens"]).column(0).to_numpy()
            out[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        out.flush()
        del out
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    # Sidecars of earlier versions of this shard are dead weight.
    for old in target.parent.glob(f"{glob.escape(stem)}.*.npy"):
        if old != target and re.fullmatch(re.escape(stem) + r"\.[0-9a-f]{16}\.npy", old.name):
            old.unlink(missing_ok=True)


def open_tokens(path: Path | str, cache_dir: Path | str | None = None) -> np.ndarray:
    """The shard's tokens as a read-only np.memmap (an empty array for an empty shard)."""
    path = Path(path)
    pf = pq.ParquetFile(path)
    if pf.metadata.num_rows == 0:
        return np.zeros(0, dtype=pf.schema_arrow.field("tokens").type.to_pandas_dtype())
    name = f"{path.stem}.{_cache_key(path, pf)}.npy"
    folders = [Path(cache_dir)] if cache_dir else [path.parent / CACHE_FOLDER, _fallback_dir(path)]
    for folder in folders:
        target = folder / name
        if not target.exists():
            try:
                folder.mkdir(parents=True, exist_ok=True)
                _unpack(pf, target, path.stem)
            except OSError:
                if folder == folders[-1]:
                    raise
                continue  # read-only run folder: use the user cache
        return np.load(target, mmap_mode="r")
    raise AssertionError("unreachable")


class TokenShards:
    """One split's token shards as a single memory-mapped stream, read in windows by one data-parallel rank."""

    def __init__(self, paths: list[Path], rank: int = 0, world_size: int = 1, cache_dir: Path | str | None = None,
                 pin_memory: bool = False):
        if not paths:
            raise ValueError("no token shards given")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.paths = [Path(p) for p in paths]
        self.arrays = [open_tokens(p, cache_dir) for p in self.paths]
        self.bounds = np.cumsum([0] + [len(a) for a in self.arrays])
        self.rank, self.world_size = rank, world_size
        # batches in page-locked memory, so .to("cuda", non_blocking=True) is an asynchronous DMA copy
        self.pin_memory = pin_memory

    @property
    def tokens(self) -> np.ndarray:
        """The whole split as one array: the memory map itself for one shard, else a copy in RAM."""
        return self.arrays[0] if len(self.arrays) == 1 else np.concatenate(self.arrays)

    def __len__(self) -> int:
        return int(self.bounds[-1])

    @property
    def rank_range(self) -> tuple[int, int]:
        """This rank's contiguous slice [lo, hi) of the stream for random windows."""
        n = len(self)
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def read(self, start: int, length: int, out: np.ndarray | None = None) -> np.ndarray:
        """Tokens [start, start + length) of the stream as int64, across shard boundaries if need be."""
        out = np.empty(length, dtype=np.int64) if out is None else out
        k = int(np.searchsorted(self.bounds, start, side="right")) - 1
        done = 0
        while done < length:
            local = start + done - int(self.bounds[k])
            piece = self.arrays[k][local : local + length - done]
            out[done : done + len(piece)] = piece
            done += len(piece)
            k += 1
        return out

    def _windows(self, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.empty((len(starts), block_size + 1), dtype=torch.int64, pin_memory=self.pin_memory)
        batch = t.numpy()  # the same memory
        for row, s in zip(batch, starts):
            self.read(int(s), block_size + 1, out=row)
        return t[:, :-1], t[:, 1:]

    def sample_starts(self, gen: torch.Generator, batch_size: int, block_size: int) -> np.ndarray:
        """Random window starts inside this rank's slice; with one rank the draw of the original reader."""
        lo, hi = self.rank_range
        if hi - lo < block_size + 1:
            raise ValueError(f"rank {self.rank} has only {hi - lo} tokens, fewer than one window of "
                             f"block_size+1={block_size + 1}")
        return lo + torch.randint(0, hi - lo - block_size, (batch_size,), generator=gen).numpy()

    def sample_batch(self, gen: torch.Generator, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: x (B, T) and y = x shifted by one (B, T), int64."""
        return self._windows(self.sample_starts(gen, batch_size, block_size), block_size)

    def sequential_starts(self, block_size: int, max_tokens: int | None = None) -> np.ndarray:
        """This rank's share of the fixed grid of non-overlapping windows from the start of the split."""
        if len(self) < block_size + 1:
            raise ValueError(f"only {len(self)} tokens, fewer than one window of block_size+1={block_size + 1}")
        n = len(self) - 1 if max_tokens is None else min(len(self) - 1, max_tokens)
        n_windows = max(1, n // block_size)
        return np.arange(self.rank, n_windows, self.world_size, dtype=np.int64) * block_size

    def sequential(
        self, batch_size: int, block_size: int, max_tokens: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping windows in order; the same batches every call (this rank's share of them)."""
        starts = self.sequential_starts(block_size, max_tokens)
        for i in range(0, len(starts), batch_size):
            yield self._windows(starts[i : i + batch_size], block_size)
