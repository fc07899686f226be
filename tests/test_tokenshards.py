"""The token shard reader: memory maps, windows across shards, reproducibility, rank disjointness.

Shards here hold 0, 1, 2, ... so a window's first token is its start position.
"""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.io.tokenshards import TokenShards, open_tokens

SIZES = [1000, 37, 2500]


def _write(path: Path, tokens: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"tokens": tokens}), path, compression="zstd", row_group_size=256)
    return path


@pytest.fixture
def shards(tmp_path: Path) -> list[Path]:
    bounds = np.cumsum([0] + SIZES)
    return [_write(tmp_path / "train" / f"shard_{i:05d}_000.parquet", np.arange(a, b, dtype=np.uint32))
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def test_arrays_are_memory_maps_of_a_sidecar_made_once(shards):
    data = TokenShards(shards)
    assert all(isinstance(a, np.memmap) and not a.flags.writeable for a in data.arrays)
    assert len(data) == sum(SIZES) and np.array_equal(data.tokens, np.arange(sum(SIZES)))
    sidecars = sorted((shards[0].parent / ".mmap").glob("*.npy"))
    assert len(sidecars) == len(shards)
    before = [p.stat().st_mtime_ns for p in sidecars]
    TokenShards(shards)
    assert [p.stat().st_mtime_ns for p in sidecars] == before, "a valid sidecar is reused, not rewritten"
    assert isinstance(TokenShards(shards[:1]).tokens, np.memmap), "one shard: .tokens is the map itself, no copy"


def test_a_rewritten_shard_gets_a_fresh_sidecar(shards):
    TokenShards(shards[:1])
    _write(shards[0], np.arange(500, dtype=np.uint32) + 7)
    assert np.array_equal(TokenShards(shards[:1]).tokens, np.arange(500) + 7)
    assert len(list((shards[0].parent / ".mmap").glob(f"{shards[0].stem}.*.npy"))) == 1, "the stale sidecar is gone"


def test_unwritable_shard_folder_falls_back_to_the_user_cache(shards, tmp_path: Path, monkeypatch):
    (shards[0].parent / ".mmap").write_text("not a folder")  # mkdir fails there, as on a read-only mount
    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path / "cache"))
    arr = open_tokens(shards[1])
    assert isinstance(arr, np.memmap) and Path(arr.filename).is_relative_to(tmp_path / "cache")
    assert np.array_equal(arr, np.arange(1000, 1037))


def test_read_crosses_shard_boundaries(shards):
    data = TokenShards(shards)
    for start, length in [(990, 60), (1000, 37), (995, 100), (0, 3537), (3536, 1)]:
        assert np.array_equal(data.read(start, length), np.arange(start, start + length))


def test_random_windows_are_in_range_shifted_and_reproducible(shards):
    data = TokenShards(shards)
    x, y = data.sample_batch(torch.Generator().manual_seed(3), batch_size=64, block_size=50)
    x2, y2 = data.sample_batch(torch.Generator().manual_seed(3), batch_size=64, block_size=50)
    assert x.dtype == torch.int64 and x.shape == y.shape == (64, 50)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y - x, torch.ones_like(x))
    assert int(x.min()) >= 0 and int(y.max()) < len(data)
    # One rank draws exactly what the original single-array reader drew.
    expected = torch.randint(0, len(data) - 50, (64,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(x[:, 0], expected)


def test_sequential_pass_is_deterministic_and_covers_the_split(shards):
    data = TokenShards(shards)
    batches = list(data.sequential(batch_size=8, block_size=64))
    again = list(data.sequential(batch_size=8, block_size=64))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    x = torch.cat([b[0] for b in batches]).flatten()
    n_windows = (len(data) - 1) // 64
    assert torch.equal(x, torch.arange(n_windows * 64)), "windows tile the split from the start, in order"
    capped = torch.cat([b[0] for b in data.sequential(batch_size=8, block_size=64, max_tokens=500)])
    assert capped.shape == (500 // 64, 64)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_read_disjoint_windows(shards, world_size):
    block = 40
    ranks = [TokenShards(shards, rank=r, world_size=world_size) for r in range(world_size)]
    # Sequential: a partition of the single-process grid.
    seq = [set(r.sequential_starts(block).tolist()) for r in ranks]
    assert all(not (seq[i] & seq[j]) for i in range(world_size) for j in range(i + 1, world_size))
    assert set().union(*seq) == set(TokenShards(shards).sequential_starts(block).tolist())
    evaluated = torch.cat([x for r in ranks for x, _ in r.sequential(4, block)]).flatten().sort().values
    assert torch.equal(evaluated, torch.cat([x for x, _ in TokenShards(shards).sequential(4, block)]).flatten())
    # Random: each rank's windows lie inside its own slice; the slices tile the stream.
    ranges = [r.rank_range for r in ranks]
    assert ranges[0][0] == 0 and ranges[-1][1] == sum(SIZES)
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(world_size - 1))
    for rank, (lo, hi) in zip(ranks, ranges):
        x, y = rank.sample_batch(torch.Generator().manual_seed(0), batch_size=256, block_size=block)
        assert int(x.min()) >= lo and int(y.max()) < hi


def test_bad_rank_and_short_split_are_clear_errors(shards):
    with pytest.raises(ValueError, match="rank 2"):
        TokenShards(shards, rank=2, world_size=2)
    with pytest.raises(ValueError, match="fewer than one window"):
        TokenShards(shards[1:2]).sample_batch(torch.Generator(), 1, block_size=64)
    with pytest.raises(ValueError, match="no token shards"):
        TokenShards([])


def test_batches_are_unpinned_by_default_and_pinned_for_a_gpu(shards):
    plain = TokenShards(shards)
    x, y = plain.sample_batch(torch.Generator().manual_seed(3), batch_size=4, block_size=50)
    assert not x.is_pinned()
    if not torch.cuda.is_available():
        pytest.skip("pinned host memory needs a CUDA build and device (the train stage pins only on CUDA)")
    pinned = TokenShards(shards, pin_memory=True)
    px, py = pinned.sample_batch(torch.Generator().manual_seed(3), batch_size=4, block_size=50)
    assert px.is_pinned() and py.is_pinned() and torch.equal(px, x) and torch.equal(py, y)
    assert all(b[0].is_pinned() for b in pinned.sequential(batch_size=4, block_size=50))
