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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data_report import LENGTH_EDGES, SCORE_EDGES, add_to_histogram, empty_histogram
from pipeline.quality import count_words
from pipeline.textclean import CJK_CHARS

DOC_SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("meta", pa.string())]
)
EXCLUDED_SCHEMA = pa.schema(
    list(DOC_SCHEMA) + [("reason", pa.string()), ("detail", pa.string()), ("score", pa.float64())]
)
SHARD_BYTES = 64 << 20
_CJK = re.compile(f"[{CJK_CHARS}]")


def write_table_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


class ShardWriter:
    """Buffers rows and writes bounded (rows and text bytes), atomically renamed Parquet shards."""

    def __init__(self, folder: Path, prefix: str, schema: pa.Schema = DOC_SCHEMA, shard_rows: int = 10_000,
                 shard_bytes: int = SHARD_BYTES):
        self.folder, self.prefix, self.schema = Path(folder), prefix, schema
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self.rows: list[dict[str, Any]] = []
        self.buffered = 0
        self.paths: list[Path] = []
        self.count = 0

    def add(self, row: dict[str, Any], nbytes: int | None = None) -> None:
        if isinstance(row.get("meta"), dict):
            # default=str: Parquet and Hugging Face rows can carry dates or decimals in their metadata.
            row = {**row, "meta": json.dumps(row["meta"], ensure_ascii=False, default=str)}
        self.rows.append(row)
        self.count += 1
        self.buffered += nbytes if nbytes is not None else len(str(row.get("text") or "").encode("utf-8"))
        if len(self.rows) >= self.shard_rows or self.buffered >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.prefix}_{len(self.paths):05d}.parquet"
        write_table_atomic(pa.Table.from_pylist(self.rows, schema=self.schema), path)
        self.paths.append(path)
        self.rows, self.buffered = [], 0

    def close(self) -> list[Path]:
        self.flush()
        return self.paths


def n_words(text: str) -> int:
    """Words for the length histogram: whitespace tokens; count_words (CJK-aware) only when CJK is present."""
    return count_words(text) if not text.isascii() and _CJK.search(text) else len(text.split())


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

    def score(self, series: str, value: float) -> None:
        add_to_histogram(self.scores.setdefault(series, empty_histogram(SCORE_EDGES)), SCORE_EDGES, value)

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

    def keep(self, doc: dict[str, Any]) -> None:
        nbytes = len(doc["text"].encode("utf-8"))
        self.kept.add(doc, nbytes)
        self.tally.kept += 1
        self.tally.bytes_kept += nbytes
        add_to_histogram(self.tally.lengths["kept"], LENGTH_EDGES, n_words(doc["text"]))

    def drop(self, doc: dict[str, Any], reason: str, detail: str = "", score: float | None = None) -> None:
        self.excluded.add({**doc, "reason": reason, "detail": detail, "score": score})
        t = self.tally
        t.dropped[reason] = t.dropped.get(reason, 0) + 1
        add_to_histogram(t.lengths["dropped"], LENGTH_EDGES, n_words(doc["text"]))
        shown = t.examples.setdefault(reason, [])
        if len(shown) < t.n_examples:
            shown.append(f"{doc['id']}: {doc['text'][:160]!r}")

    def close(self) -> Tally:
        """Flush the shards; the tally names them (paths relative to the stage folder)."""
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


def iter_docs(paths: list[Path], batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Stream documents from shards in order, one row group batch at a time (bounded memory)."""
    for path in paths:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_size, columns=list(DOC_SCHEMA.names)):
            # column lists zipped into dicts: twice as fast as RecordBatch.to_pylist
            yield from (dict(zip(DOC_SCHEMA.names, row)) for row in zip(*(c.to_pylist() for c in batch.columns)))


def rel_paths(paths: list[Path], stage_dir: Path) -> list[str]:
    return [str(Path(p).relative_to(stage_dir)) for p in paths]
