"""Partition files: the shuffle between the steps of a job spread over shards, on any executor.

    write_parts(work, "pairs", source=3, dest=shard_of_a, arrays={"a": a, "b": b})
    write_blocks(work, "drops", source=3, blocks={5: {"gid": ..., "ids": ...}, 9: {...}})
    read_parts(work, "pairs", dest=5)  -> {"a": ..., "b": ...} from every source, in source order, or None

A step's task (one per shard or per partition: its `source` number) sends arrays to the tasks of the next
step, by destination: `write_parts` routes each row to `dest[row]`, `write_blocks` sends whole arrays
(strings as bytes, say) per destination. One file per (step, source, group of `DESTS_PER_FILE`
destinations) under `work`: `<work>/<step>/<group>/<source>.part` holds one JSON line (per destination
it serves: the byte offset of its block and each array's name, dtype and shape), then the blocks'
raw bytes. A reader seeks to its own block, so a file shared by 8 destinations is not read 8 times.
Shard-to-shard steps of 100 shards write 100 x 13 files instead of 100 x 100 (a file costs ~0.25 ms
to create here), with no zip container (an `.npz` cost ~1 ms a file in CRCs and directories) and no
per-array header to parse. Plain numeric arrays only: nothing is ever unpickled, and strings travel as
UTF-8 bytes and lengths (`encode_strings`). A file is written to a temporary name and renamed, so a
reader never sees half a file and a task run twice (a Dask retry) rewrites the same file. The driver
passes only folder names and numbers between steps; every array stays on disk.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

DESTS_PER_FILE = 8


def part_path(work: Path, step: str, group: int, source: int) -> Path:
    return Path(work) / step / f"{group:05d}" / f"{source:05d}.part"


def write_blocks(work: Path, step: str, source: int, blocks: dict[int, dict[str, np.ndarray]]) -> None:
    """Send blocks[dest] (plain numeric arrays) to each destination."""
    groups: dict[int, list[int]] = {}
    for dest in sorted(blocks):
        groups.setdefault(dest // DESTS_PER_FILE, []).append(dest)
    for group, dests in groups.items():
        index, arrays, offset = [], [], 0
        for dest in dests:
            described = []
            for name, array in blocks[dest].items():
                array = np.ascontiguousarray(array)
                if array.dtype.hasobject:
                    raise TypeError(f"partition files hold plain arrays; {name} is {array.dtype}")
                described.append([name, array.dtype.str, list(array.shape)])
                arrays.append(array)
            size = sum(a.nbytes for a in arrays[len(arrays) - len(described):])
            index.append([dest, offset, described])
            offset += size
        path = part_path(work, step, group, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(json.dumps(index).encode() + b"\n")
            for array in arrays:
                fh.write(array.data)
        os.replace(tmp, path)


def write_parts(work: Path, step: str, source: int, dest: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
    """Send row i of every array to destination dest[i], rows in their order here."""
    order = np.argsort(dest, kind="stable")
    dest = dest[order]
    cuts = np.flatnonzero(np.r_[True, dest[1:] != dest[:-1]]) if len(dest) else np.zeros(0, np.int64)
    ends = np.r_[cuts[1:], len(dest)]
    write_blocks(work, step, source, {int(dest[start]): {name: a[order[start:end]] for name, a in arrays.items()}
                                      for start, end in zip(cuts.tolist(), ends.tolist())})


def _read_block(path: Path, dest: int) -> dict[str, np.ndarray] | None:
    with open(path, "rb") as fh:
        index = json.loads(fh.readline())
        block = next((b for b in index if b[0] == dest), None)
        if block is None:
            return None
        fh.seek(block[1], os.SEEK_CUR)
        out = {}
        for name, dtype, shape in block[2]:
            out[name] = np.fromfile(fh, np.dtype(dtype), count=math.prod(shape)).reshape(shape)
        return out


def read_parts(work: Path, step: str, dest: int) -> dict[str, np.ndarray] | None:
    """Every source's rows for `dest`, concatenated in source order; None when no source sent any."""
    folder = Path(work) / step / f"{dest // DESTS_PER_FILE:05d}"
    files = sorted(folder.glob("[0-9]*.part")) if folder.is_dir() else []
    parts = [part for part in (_read_block(path, dest) for path in files) if part is not None]
    if not parts:
        return None
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def encode_strings(strings: pa.Array | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, int64 byte length of each string) of strings: per-row lengths, unlike offsets, stay right
    when `read_parts` concatenates the files of several sources. `decode_strings` reverses it."""
    if not isinstance(strings, pa.Array):
        strings = pa.array(strings, pa.large_string())
    strings = strings.cast(pa.large_string())
    if strings.null_count:
        raise ValueError("encode_strings: null strings cannot travel")
    _, offsets, data = strings.buffers()
    offsets = np.frombuffer(offsets, np.int64)[strings.offset : strings.offset + len(strings) + 1]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return data[offsets[0] : offsets[-1]].copy(), np.diff(offsets)


def decode_strings(data: np.ndarray, lengths: np.ndarray) -> list[str]:
    offsets = np.r_[0, np.cumsum(lengths, dtype=np.int64)].astype(np.int64)
    array = pa.LargeStringArray.from_buffers(len(lengths), pa.py_buffer(offsets),
                                             pa.py_buffer(np.ascontiguousarray(data, np.uint8)))
    return array.to_pylist()
