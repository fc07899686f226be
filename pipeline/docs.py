"""Document shards: Parquet files of (id, text, source, meta) and quarantine shards with a reason.

Kept documents go to `docs_*.parquet`; rejected ones to `excluded/excluded_*.parquet` with `reason`
(a short rule name), `detail` (free text: file and line, matched words, cluster) and `score` (the
rule's score where it has one). `meta` is a JSON object string so sources with different fields
share one schema. Shards roll over at `shard_rows` documents or `shard_bytes` of text, whichever
comes first, and each is written to a temporary name and renamed, so a shard on disk is complete.

A `Sieve` routes documents of one shard of work and keeps a `Tally`: counts per reason, two
examples per reason, fixed-bin histograms. Tallies of shards processed anywhere (in-process, a
process pool, a Dask worker) merge in shard order into the same stats, so output and report do
not depend on how the work was split.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numba import njit

from pipeline.data_report import LENGTH_EDGES, SCORE_EDGES, empty_histogram
from pipeline.quality import count_words
from pipeline.textclean import CJK_CHARS

DOC_SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("meta", pa.string())]
)
EXCLUDED_SCHEMA = pa.schema(
    list(DOC_SCHEMA) + [("reason", pa.string()), ("detail", pa.string()), ("score", pa.float64())]
)
SHARD_BYTES = 64 << 20
_REPEATING_COLUMNS = ("source", "reason")
_CJK = re.compile(f"[{CJK_CHARS}]")


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


def word_counts(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Words per text of a string column, for the length histogram: whitespace tokens counted on the
    column's UTF-8 buffer in place (no Python string per document); CJK-aware `count_words` for the
    few texts holding CJK."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    counts, maybe_cjk = _whitespace_words(data, offsets)
    for i in np.flatnonzero(maybe_cjk).tolist():
        text = arr[i].as_py()
        if _CJK.search(text):
            counts[i] = count_words(text)
    return counts


@njit(cache=True, nogil=True)
def _whitespace_words(data, offsets):
    """(whitespace tokens per text, whether it may hold CJK) of UTF-8 texts data[offsets[i]:offsets[i + 1]].
    Whitespace is the ASCII of str.split(): \t \n \x0b \x0c \r, \x1c-\x1f and the space. CJK characters are
    3-byte sequences led by 0xE3-0xED or 0xEF: only those texts need count_words. Unsigned arithmetic
    without a lookup table or branches: a quarter faster than a table (on book paragraphs)."""
    n = len(offsets) - 1
    counts, maybe_cjk = np.zeros(n, np.int64), np.zeros(n, np.bool_)
    one = np.uint32(1)
    for i in range(n):
        words, lead, after_space = np.uint32(0), np.uint32(0), one  # a word starts after a space or at the start
        for j in range(offsets[i], offsets[i + 1]):
            b = np.uint32(data[j])
            space = np.uint32((b == 32) | (b - np.uint32(9) <= np.uint32(4)) | (b - np.uint32(28) <= np.uint32(3)))
            words += after_space & (space ^ one)
            after_space = space
            lead |= np.uint32((b - np.uint32(0xE3) <= np.uint32(12)) & (b != np.uint32(0xEE)))
        counts[i], maybe_cjk[i] = words, lead != 0
    return counts, maybe_cjk


def _add_all(histograms: dict[str, list[int]], series: str, values: np.ndarray, edges: list[float]) -> None:
    """Count many values at once, in the bins add_to_histogram would put them one at a time."""
    if len(values):
        bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        hist = histograms.setdefault(series, empty_histogram(edges))
        hist[:] = (np.asarray(hist) + np.bincount(bins, minlength=len(edges) - 1)).tolist()


def add_counts(into: dict[str, Any], extra: dict[str, Any]) -> None:
    """Sum `extra` into `into`: numbers add, nested dicts add key by key."""
    for key, value in extra.items():
        if isinstance(value, dict):
            add_counts(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value


@dataclass
class Tally:
    """What one shard of work did: counts, examples, histograms and the shards it wrote."""

    kept: int = 0
    bytes_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    lengths: dict[str, list[int]] = field(default_factory=lambda: {k: empty_histogram(LENGTH_EDGES) for k in ("kept", "dropped")})
    scores: dict[str, list[int]] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)  # stage-specific counters, summed on merge
    outputs: dict[str, list[str]] = field(default_factory=dict)  # name -> paths relative to the stage folder
    n_examples: int = 2

    def count(self, key: str, value: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + value

    def count_lengths(self, series: str, words: np.ndarray) -> None:
        """Add documents of these word counts to the length histogram `series` ("kept", "dropped")."""
        _add_all(self.lengths, series, words, LENGTH_EDGES)

    def count_scores(self, series: str, scores: np.ndarray) -> None:
        """Add documents of these scores to the score histogram `series`."""
        _add_all(self.scores, series, scores, SCORE_EDGES)

    def merge(self, other: "Tally") -> "Tally":
        """Add `other` (the next shard) into this one; examples keep the first ones in shard order."""
        self.kept += other.kept
        self.bytes_kept += other.bytes_kept
        add_counts(self.dropped, other.dropped)
        for reason, shown in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine += shown[: max(0, self.n_examples - len(mine))]
        for mine, theirs in ((self.lengths, other.lengths), (self.scores, other.scores)):
            for series, hist in theirs.items():
                mine[series] = [a + b for a, b in zip(mine.get(series, [0] * len(hist)), hist)]
        add_counts(self.counts, other.counts)
        for name, paths in other.outputs.items():
            self.outputs.setdefault(name, []).extend(paths)
        return self

    def stats(self) -> dict[str, Any]:
        """Manifest stats; `docs_in == docs_kept + sum(dropped.values())` holds by construction."""
        return {"docs_in": self.kept + sum(self.dropped.values()), "docs_kept": self.kept,
                "dropped": dict(sorted(self.dropped.items())), "bytes_kept": self.bytes_kept,
                "examples": self.examples, **self.counts}


def merge_tallies(tallies: list[Tally]) -> Tally:
    total = Tally()
    for t in tallies:
        total.merge(t)
    return total


class Sieve:
    """Routes each document of one shard of work to the kept shards or to quarantine, tallying reasons.

    `tag` (e.g. the input shard number) makes the file names of parallel shards distinct:
    `docs_<tag>_00000.parquet`, `excluded/excluded_<tag>_00000.parquet`.
    """

    def __init__(self, stage_dir: Path, tag: str = "", shard_rows: int = 10_000, shard_bytes: int = SHARD_BYTES,
                 kept_prefix: str = "docs", excluded_prefix: str = "excluded"):
        self.stage_dir = Path(stage_dir)
        name = (lambda p: f"{p}_{tag}") if tag else (lambda p: p)
        self.kept = ShardWriter(self.stage_dir, name(kept_prefix), DOC_SCHEMA, shard_rows, shard_bytes)
        self.excluded = ShardWriter(self.stage_dir / "excluded", name(excluded_prefix), EXCLUDED_SCHEMA, shard_rows, shard_bytes)
        self.tally = Tally()
        self._unmeasured: dict[str, list[str]] = {"kept": [], "dropped": []}  # texts kept/dropped one by one

    def _measure(self, series: str, text: str | None = None) -> None:
        """Count the words of texts kept or dropped one at a time in batches (word_counts is vectorised):
        `text` joins the pending ones, which are counted when there are BATCH_ROWS of them or none comes."""
        pending = self._unmeasured[series]
        if text is not None:
            pending.append(text)
        if pending and (text is None or len(pending) >= BATCH_ROWS):
            self.tally.count_lengths(series, word_counts(pa.array(pending, pa.string())))
            pending.clear()

    def keep(self, doc: dict[str, Any]) -> None:
        nbytes = len(doc["text"].encode("utf-8"))
        self.kept.add(doc, nbytes)
        self.tally.kept += 1
        self.tally.bytes_kept += nbytes
        self._measure("kept", doc["text"])

    def drop(self, doc: dict[str, Any], reason: str, detail: str = "", score: float | None = None) -> None:
        self.excluded.add({**doc, "reason": reason, "detail": detail, "score": score})
        t = self.tally
        t.dropped[reason] = t.dropped.get(reason, 0) + 1
        self._measure("dropped", doc["text"])
        shown = t.examples.setdefault(reason, [])
        if len(shown) < t.n_examples:
            shown.append(f"{doc['id']}: {doc['text'][:160]!r}")

    def keep_batch(self, table: pa.Table) -> None:
        """keep() for every row of `table` (DOC_SCHEMA columns)."""
        if not table.num_rows:
            return
        nbytes = pc.binary_length(table.column("text")).to_numpy(zero_copy_only=False)
        self.kept.add_table(table, nbytes)
        self.tally.kept += table.num_rows
        self.tally.bytes_kept += int(nbytes.sum())
        self.tally.count_lengths("kept", word_counts(table.column("text")))

    def drop_batch(self, table: pa.Table, reasons: list[str], details: list[str],
                   scores: list[float | None] | None = None) -> None:
        """drop() for every row of `table`, row i with reasons[i], details[i] and scores[i]."""
        if not table.num_rows:
            return
        scores = [None] * table.num_rows if scores is None else scores
        full = (table.append_column("reason", pa.array(reasons, pa.string()))
                .append_column("detail", pa.array(details, pa.string()))
                .append_column("score", pa.array(scores, pa.float64())))
        self.excluded.add_table(full, pc.binary_length(table.column("text")).to_numpy(zero_copy_only=False))
        t = self.tally
        ids, texts = table.column("id"), table.column("text")
        for reason, n in Counter(reasons).items():  # in order of first appearance, as drop() one by one
            t.dropped[reason] = t.dropped.get(reason, 0) + n
            shown = t.examples.setdefault(reason, [])
            for i in islice((i for i, r in enumerate(reasons) if r == reason), max(0, t.n_examples - len(shown))):
                shown.append(f"{ids[i].as_py()}: {texts[i].as_py()[:160]!r}")
        t.count_lengths("dropped", word_counts(texts))

    def close(self) -> Tally:
        """Flush the shards and the pending word counts; the tally names the shards (paths relative to the
        stage folder)."""
        for series in self._unmeasured:
            self._measure(series)
        self.tally.outputs["docs"] = rel_paths(self.kept.close(), self.stage_dir)
        self.tally.outputs["excluded"] = rel_paths(self.excluded.close(), self.stage_dir)
        return self.tally


def finish(stage_dir: Path, stage: str, tally: Tally, extra: dict[str, Any] | None = None,
           sections: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(outputs, stats) of a data stage from its merged tally, after writing the stage's data report."""
    from pipeline.data_report import write_data_report

    stats = {**tally.stats(), **(extra or {})}
    outputs: dict[str, Any] = {name: list(paths) for name, paths in tally.outputs.items()}
    outputs.setdefault("docs", [])
    outputs.setdefault("excluded", [])
    outputs.update(write_data_report(Path(stage_dir), stage, stats, tally.lengths, tally.scores, sections))
    return outputs, stats


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
            cuts = [0, *np.searchsorted(sizes, np.arange(BATCH_BYTES, int(sizes[-1]) if len(sizes) else 0, BATCH_BYTES)).tolist()]
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
