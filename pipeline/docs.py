"""Document shards: Parquet files of (id, text, source, meta) and quarantine shards with a reason.

Kept documents go to `docs_00000.parquet`, ...; rejected ones to `excluded/excluded_00000.parquet`
with `reason` (a short rule name), `detail` (free text: file and line, matched words, cluster) and
`score` (the rule's score where it has one). `meta` is a JSON object string so sources with
different fields share one schema.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

DOC_SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("meta", pa.string())]
)
EXCLUDED_SCHEMA = pa.schema(
    list(DOC_SCHEMA) + [("reason", pa.string()), ("detail", pa.string()), ("score", pa.float64())]
)


def write_table_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


class ShardWriter:
    """Buffers rows and writes bounded, atomically renamed Parquet shards."""

    def __init__(self, folder: Path, prefix: str, schema: pa.Schema = DOC_SCHEMA, shard_rows: int = 10_000):
        self.folder, self.prefix, self.schema, self.shard_rows = Path(folder), prefix, schema, shard_rows
        self.rows: list[dict[str, Any]] = []
        self.paths: list[Path] = []
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        if isinstance(row.get("meta"), dict):
            row = {**row, "meta": json.dumps(row["meta"], ensure_ascii=False)}
        self.rows.append(row)
        self.count += 1
        if len(self.rows) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.prefix}_{len(self.paths):05d}.parquet"
        write_table_atomic(pa.Table.from_pylist(self.rows, schema=self.schema), path)
        self.paths.append(path)
        self.rows = []

    def close(self) -> list[Path]:
        self.flush()
        return self.paths


class Sieve:
    """Routes each document to the kept shards or to quarantine, counting reasons and keeping examples.

    Its stats satisfy `docs_in == docs_kept + sum(dropped.values())` by construction.
    """

    def __init__(self, stage_dir: Path, shard_rows: int = 10_000, examples: int = 2):
        self.stage_dir = Path(stage_dir)
        self.kept = ShardWriter(self.stage_dir, "docs", DOC_SCHEMA, shard_rows)
        self.excluded = ShardWriter(self.stage_dir / "excluded", "excluded", EXCLUDED_SCHEMA, shard_rows)
        self.dropped: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}
        self.n_examples = examples
        self.bytes_kept = 0
        self.lengths: dict[str, list[int]] = {"kept": [], "dropped": []}  # words, for the report

    def keep(self, doc: dict[str, Any]) -> None:
        self.kept.add(doc)
        self.bytes_kept += len(doc["text"].encode("utf-8"))
        self.lengths["kept"].append(len(doc["text"].split()))

    def drop(self, doc: dict[str, Any], reason: str, detail: str = "", score: float | None = None) -> None:
        self.excluded.add({**doc, "reason": reason, "detail": detail, "score": score})
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.lengths["dropped"].append(len(doc["text"].split()))
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.n_examples:
            shown.append(f"{doc['id']}: {doc['text'][:160]!r}")

    def close(self, stage: str, extra: dict[str, Any] | None = None,
              scores: dict[str, list[float]] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Flush the shards and write the stage's data report; returns (outputs, stats)."""
        from pipeline.data_report import write_data_report

        outputs: dict[str, Any] = {
            "docs": rel_paths(self.kept.close(), self.stage_dir),
            "excluded": rel_paths(self.excluded.close(), self.stage_dir),
        }
        stats = {
            "docs_in": self.kept.count + sum(self.dropped.values()),
            "docs_kept": self.kept.count,
            "dropped": dict(sorted(self.dropped.items())),
            "bytes_kept": self.bytes_kept,
            "examples": self.examples,
            **(extra or {}),
        }
        outputs.update(write_data_report(self.stage_dir, stage, stats, self.lengths, scores))
        return outputs, stats


def iter_docs(paths: list[Path], batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Stream documents from shards in order, one row group batch at a time (bounded memory)."""
    for path in paths:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_size, columns=["id", "text", "source", "meta"]):
            yield from batch.to_pylist()


def rel_paths(paths: list[Path], stage_dir: Path) -> list[str]:
    return [str(Path(p).relative_to(stage_dir)) for p in paths]
