"""Document shards: Parquet files of (id, text, source, meta) and quarantine shards with a reason.

Kept documents go to `docs_*.parquet`; rejected ones to `excluded/excluded_*.parquet` with `reason`
(a short rule name), `detail` (free text: file and line, matched words, cluster) and `score` (the
rule's score where it has one). `meta` is a JSON object string so sources with different fields
share one schema. Shards roll over at `shard_rows` documents or `shard_bytes` of text, whichever
comes first, and each is written to a temporary name and renamed, so a shard on disk is complete.

Readers stream shards as bounded batches (`iter_batches`) or documents (`iter_docs`); which document
goes where is the stages' business (`pipeline.sieve`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DOC_SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("meta", pa.string())]
)
EXCLUDED_SCHEMA = pa.schema(
    list(DOC_SCHEMA) + [("reason", pa.string()), ("detail", pa.string()), ("score", pa.float64())]
)
SHARD_BYTES = 64 << 20
_REPEATING_COLUMNS = ("source", "reason")


def write_table_atomic(table: pa.Table, path: Path, compression: str = "zstd") -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    # Dictionary pages only for the columns that repeat: on unique texts and ids, building the
    # dictionary before falling back to plain encoding was a quarter of the write time.
    dictionary = [c for c in _REPEATING_COLUMNS if c in table.column_names]
    pq.write_table(table, tmp, compression=compression, use_dictionary=dictionary)
    os.replace(tmp, path)


class ShardWriter:
    """Buffers rows and writes bounded (rows and text bytes), atomically renamed Parquet shards."""

    def __init__(self, folder: Path, prefix: str, schema: pa.Schema = DOC_SCHEMA, shard_rows: int = 10_000,
                 shard_bytes: int = SHARD_BYTES, compression: str = "zstd"):
        self.folder, self.prefix, self.schema, self.compression = Path(folder), prefix, schema, compression
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self.rows: list[dict[str, Any]] = []
        self.tables: list[pa.Table] = []  # batches added whole (add_table)
        self.buffered = 0
        self.buffered_rows = 0
        self.paths: list[Path] = []
        self.count = 0

    def add(self, row: dict[str, Any], nbytes: int | None = None) -> None:
        if isinstance(row.get("meta"), dict):
            # default=str: Parquet and Hugging Face rows can carry dates or decimals in their metadata.
            row = {**row, "meta": json.dumps(row["meta"], ensure_ascii=False, default=str)}
        self.rows.append(row)
        self.count += 1
        self.buffered_rows += 1
        self.buffered += nbytes if nbytes is not None else len(str(row.get("text") or "").encode("utf-8"))
        if self.buffered_rows >= self.shard_rows or self.buffered >= self.shard_bytes:
            self.flush()

    def add_table(self, table: pa.Table, nbytes: np.ndarray) -> None:
        """Add a whole batch of rows (`nbytes`: the UTF-8 size of each row's text); shards roll over as with add()."""
        done = 0
        while done < table.num_rows:
            if self.rows:  # rows added one by one go first, in order
                self.tables.append(pa.Table.from_pylist(self.rows, schema=self.schema))
                self.rows = []
            room = self.shard_rows - self.buffered_rows
            cum = np.cumsum(nbytes[done : done + room])
            # as add() one row at a time: up to and including the row that reaches the byte cap
            take = min(len(cum), int(np.searchsorted(cum, self.shard_bytes - self.buffered, side="left")) + 1)
            self.tables.append(table.slice(done, take).cast(self.schema))
            self.count += take
            self.buffered += int(cum[take - 1])
            self.buffered_rows += take
            done += take
            if self.buffered_rows >= self.shard_rows or self.buffered >= self.shard_bytes:
                self.flush()

    def flush(self) -> None:
        if self.rows:
            self.tables.append(pa.Table.from_pylist(self.rows, schema=self.schema))
        if not self.tables:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.prefix}_{len(self.paths):05d}.parquet"
        write_table_atomic(pa.concat_tables(self.tables).combine_chunks(), path, self.compression)
        self.paths.append(path)
        self.rows, self.tables, self.buffered, self.buffered_rows = [], [], 0, 0

    def close(self) -> list[Path]:
        self.flush()
        return self.paths


BATCH_ROWS = 1024
BATCH_BYTES = 1 << 20  # bounds the code-point arrays the text functions build per batch (~4-16 MB)


def iter_batches(paths: list[Path], batch_size: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """Stream documents from shards in order as tables of at most `batch_size` rows and about
    BATCH_BYTES of text (bounded memory, whole batches for the vectorized text functions)."""
    for path in paths:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_size, columns=list(DOC_SCHEMA.names)):
            table = pa.Table.from_batches([batch])
            sizes = np.cumsum(pc.binary_length(table.column("text")).to_numpy(zero_copy_only=False))
            bounds = np.arange(BATCH_BYTES, int(sizes[-1]) if len(sizes) else 0, BATCH_BYTES)
            cuts = [0, *np.searchsorted(sizes, bounds).tolist()]
            for start, end in zip(cuts, cuts[1:] + [table.num_rows]):
                if end > start:
                    yield table.slice(start, end - start)


def iter_docs(paths: list[Path], batch_size: int = BATCH_ROWS) -> Iterator[dict[str, Any]]:
    """Stream documents from shards in order, one dict per document (bounded memory)."""
    for table in iter_batches(paths, batch_size):
        # column lists zipped into dicts: twice as fast as Table.to_pylist
        yield from (dict(zip(DOC_SCHEMA.names, row)) for row in zip(*(c.to_pylist() for c in table.columns)))


def rel_paths(paths: list[Path], stage_dir: Path) -> list[str]:
    return [str(Path(p).relative_to(stage_dir)) for p in paths]
