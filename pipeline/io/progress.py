"""A data stage's progress on a terminal: documents and MB done and their rates, like train's and tokenize's bars.

    with Progress("clean", total_mb=shards_mb(paths)) as bar:
        run_shards(clean_shard, jobs, ..., on_result=lambda job, _: bar.update(*sizes[job["shard"]]))

Quiet when stderr is not a terminal (a log file, CI, a Prefect worker): the stage's closing log line
says it all there. MB are of document text (UTF-8 as stored, uncompressed), so rates compare across
stages and formats.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

MB = 1 << 20


def on_terminal(stream=None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced by an object without isatty
        return False


def shard_sizes(paths: list[Path]) -> list[tuple[int, int]]:
    """(documents, uncompressed bytes of the text column) of each document shard, from its Parquet footer."""
    out = []
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        col = names.index("text") if "text" in names else None
        size = sum(meta.row_group(g).column(col).total_uncompressed_size
                   for g in range(meta.num_row_groups)) if col is not None else 0
        out.append((meta.num_rows, size))
    return out


class Progress:
    """A tqdm bar in MB with documents and documents per second after it; `update` is cheap enough per document."""

    def __init__(self, desc: str, total_mb: float | None = None, stream=None, min_interval: float = 0.5):
        stream = stream if stream is not None else sys.stderr
        self.bar = tqdm(total=total_mb, desc=desc, unit="MB", file=stream, mininterval=min_interval,
                        disable=not on_terminal(stream), dynamic_ncols=True,
                        bar_format="{desc}: {n:.2f}" + ("/{total:.2f}" if total_mb else "") + " MB "
                                   "[{elapsed}{postfix}]")
        self.docs, self.nbytes, self._bytes = 0, 0, 0
        self._t0 = self._last = time.perf_counter()
        self.min_interval = min_interval

    def update(self, docs: int, nbytes: int) -> None:
        self.docs += docs
        self.nbytes += nbytes
        self._bytes += nbytes
        if self.bar.disable:
            return
        now = time.perf_counter()
        if now - self._last >= self.min_interval:
            self._flush(now)

    def _flush(self, now: float) -> None:
        seconds = max(now - self._t0, 1e-9)
        self.bar.set_postfix_str(f"{self.docs:,} docs, {self.docs / seconds:,.0f} docs/s, "
                                 f"{self.nbytes / MB / seconds:,.2f} MB/s", refresh=False)
        self.bar.update(self._bytes / MB)
        self._bytes, self._last = 0, now

    def close(self) -> None:
        if not self.bar.disable:
            self._flush(time.perf_counter())
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
