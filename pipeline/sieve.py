"""Which documents a data stage keeps and which it quarantines, and the tally of why.

A `Sieve` routes the documents of one shard of work to the kept shards (`docs_*.parquet`) or to
quarantine (`excluded/excluded_*.parquet`, with `reason`, `detail` and `score`) and keeps a `Tally`:
counts per reason, two examples per reason, fixed-bin histograms. Tallies of shards processed anywhere
(in-process, a process pool, a Dask worker) merge in shard order into the same stats, so output and
report do not depend on how the work was split. `finish` turns the merged tally into the stage's
outputs and stats and writes its data report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io.docshards import BATCH_ROWS, DOC_SCHEMA, EXCLUDED_SCHEMA, SHARD_BYTES, ShardWriter, rel_paths
from pipeline.manifest import EmptyCorpus
from pipeline.reports import LENGTH_EDGES, SCORE_EDGES, empty_histogram, write_data_report
from pipeline.text.quality import word_counts


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
    lengths: dict[str, list[int]] = field(default_factory=lambda: {k: empty_histogram(LENGTH_EDGES) for k in ("kept",
        "dropped")})
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

    def merge(self, other: Tally) -> Tally:
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


def require_documents(stage: str, shards: list[Path]) -> int:
    """The number of documents in the input shards; EmptyCorpus when there are none."""
    n = sum(pq.ParquetFile(p).metadata.num_rows for p in shards)
    if n == 0:
        raise EmptyCorpus(f"empty corpus: {stage} got no documents ({len(shards)} input shards, 0 rows)")
    return n


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
        self.excluded = ShardWriter(self.stage_dir / "excluded", name(excluded_prefix), EXCLUDED_SCHEMA, shard_rows,
                                    shard_bytes)
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
    """(outputs, stats) of a data stage from its merged tally, after writing the stage's data report.
    A stage that kept no document stops here (EmptyCorpus): the next stage would have nothing to read."""
    if tally.kept == 0:
        n_in = sum(tally.dropped.values())
        raise EmptyCorpus(f"empty corpus: {stage} kept 0 of {n_in} documents (dropped: {tally.dropped or 'none'}); "
                          f"why each went is in {Path(stage_dir) / 'excluded'}/")
    stats = {**tally.stats(), **(extra or {})}
    outputs: dict[str, Any] = {name: list(paths) for name, paths in tally.outputs.items()}
    outputs.setdefault("docs", [])
    outputs.setdefault("excluded", [])
    outputs.update(write_data_report(Path(stage_dir), stage, stats, tally.lengths, tally.scores, sections))
    return outputs, stats
