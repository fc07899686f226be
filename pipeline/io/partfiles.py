"""Partition files: the shuffle between the steps of a job spread over shards, on any executor.

    write_parts(work, "pairs", source=3, dest=shard_of_a, arrays={"a": a, "b": b})
    read_parts(work, "pairs", dest=5)  -> {"a": ..., "b": ...} from every source, in source order, or None

A step's task (one per shard or per partition: its `source` number) sends each row of its arrays to
the task of the next step that `dest` names, as one uncompressed `.npz` per (step, destination,
source) under `work`: `<work>/<step>/<dest>/<source>.npz`, written to a temporary name and renamed,
so a reader never sees half a file and a task run twice (a Dask retry) rewrites the same file. The
driver passes only folder names and numbers between steps; every array stays on disk. Strings
travel as UTF-8 bytes and offsets (`encode_strings`), never as pickled objects.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa


def part_path(work: Path, step: str, dest: int, source: int) -> Path:
    return Path(work) / step / f"{dest:05d}" / f"{source:05d}.npz"


def write_part(work: Path, step: str, dest: int, source: int, arrays: dict[str, np.ndarray]) -> None:
    path = part_path(work, step, dest, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def write_parts(work: Path, step: str, source: int, dest: np.ndarray, arrays: dict[str, np.ndarray]) -> int:
    """Send row i of every array to destination dest[i]: one file per destination that gets rows, rows in
    their order here. Returns the number of files written."""
    order = np.argsort(dest, kind="stable")
    dest = dest[order]
    cuts = np.flatnonzero(np.r_[True, dest[1:] != dest[:-1]]) if len(dest) else np.zeros(0, np.int64)
    ends = np.r_[cuts[1:], len(dest)]
    for start, end in zip(cuts.tolist(), ends.tolist()):
        rows = order[start:end]
        write_part(work, step, int(dest[start]), source, {name: a[rows] for name, a in arrays.items()})
    return len(cuts)


def read_parts(work: Path, step: str, dest: int) -> dict[str, np.ndarray] | None:
    """Every source's rows for `dest`, concatenated in source order; None when no source sent any."""
    folder = Path(work) / step / f"{dest:05d}"
    files = sorted(folder.glob("[0-9]*.npz")) if folder.is_dir() else []
    if not files:
        return None
    parts = []
    for path in files:
        with np.load(path, allow_pickle=False) as npz:
            parts.append({name: npz[name] for name in npz.files})
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
