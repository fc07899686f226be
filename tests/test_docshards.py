"""Document shards a batch at a time: roll-over, order, batches, word counts, histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.io.docshards import BATCH_ROWS, DOC_SCHEMA, ShardWriter, iter_batches, iter_docs
from pipeline.reports import LENGTH_EDGES, add_to_histogram, empty_histogram
from pipeline.sieve import Sieve, Tally
from pipeline.text.quality import count_words, word_counts


def _table(ids: range, text: str = "a few words") -> pa.Table:
    return pa.table({"id": [f"d{i}" for i in ids], "text": [f"{text} {i}" for i in ids],
                     "source": ["s"] * len(ids), "meta": ["{}"] * len(ids)}, schema=DOC_SCHEMA)


def _nbytes(table: pa.Table) -> np.ndarray:
    return pc.binary_length(table.column("text")).to_numpy(zero_copy_only=False)


def test_batches_and_single_rows_roll_over_in_order(tmp_path: Path):
    writer = ShardWriter(tmp_path, "docs", shard_rows=7)
    writer.add({"id": "first", "text": "one row", "source": "s", "meta": {"k": 1}})
    for start in (0, 5, 20):
        batch = _table(range(start, start + 5 if start < 20 else start + 12))
        writer.add_table(batch, _nbytes(batch))
    paths = writer.close()
    sizes = [pq.read_metadata(p).num_rows for p in paths]
    assert sizes == [7, 7, 7, 2] and writer.count == 23
    ids = [d["id"] for d in iter_docs(paths)]
    assert ids == ["first"] + [f"d{i}" for i in [*range(10), *range(20, 32)]]


def test_batches_roll_over_at_the_byte_cap_like_single_rows(tmp_path: Path):
    batches = [_table(range(10), text="x" * 100), _table(range(10, 11), text="y" * 1000), _table(range(11, 15))]
    whole = ShardWriter(tmp_path / "batches", "docs", shard_bytes=300)
    one = ShardWriter(tmp_path / "rows", "docs", shard_bytes=300)
    for batch in batches:
        whole.add_table(batch, _nbytes(batch))
        for row in batch.to_pylist():
            one.add(row)
    layout = lambda paths: [pq.read_table(p).column("id").to_pylist() for p in paths]  # noqa: E731
    assert layout(whole.close()) == layout(one.close())
    assert [len(ids) for ids in layout(whole.paths)] == [3, 3, 3, 2, 4]  # a shard closes once it reaches the cap


def test_iter_batches_bounds_rows(tmp_path: Path):
    writer = ShardWriter(tmp_path, "docs")
    batch = _table(range(2500))
    writer.add_table(batch, _nbytes(batch))
    tables = list(iter_batches(writer.close(), batch_size=1000))
    assert [t.num_rows for t in tables] == [1000, 1000, 500]
    assert pa.concat_tables(tables).column("id").to_pylist() == batch.column("id").to_pylist()


def test_word_counts_on_the_arrow_buffer():
    texts = ["two words", "", "  spaced\tout\nover lines  ", "你好 世界 ok", "x", "naïve café au lait"]
    column = pa.chunked_array([pa.array(texts[:3]), pa.array(texts[3:])])
    expected = [count_words(t) if "你" in t else len(t.split()) for t in texts]
    assert word_counts(column).tolist() == expected
    assert word_counts(pa.array(texts).slice(2, 3)).tolist() == expected[2:5]  # an offset array


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ab é!\x08\t\n\r\x0b\x0c\x0e\x1b\x1c\x1d\x1e\x1f", max_size=12), max_size=8),
       st.integers(0, 3))
def test_word_counts_are_whitespace_tokens(texts, skip):
    # empty texts, texts that start or end with spaces, arrays that start inside their buffer, and the
    # bytes on either side of each whitespace range
    column = pa.array(["x y", *texts]).slice(min(skip, len(texts)))
    assert word_counts(column).tolist() == [len(t.split()) for t in column.to_pylist()]


def test_histograms_of_many_values_match_one_at_a_time():
    values = np.array([0, 1, 3, 10, 10**8, 55])
    tally = Tally()
    tally.count_lengths("kept", values)
    one = empty_histogram(LENGTH_EDGES)
    for v in values:
        add_to_histogram(one, LENGTH_EDGES, v)
    assert tally.lengths["kept"] == one


def test_documents_kept_one_by_one_tally_like_a_batch(tmp_path: Path):
    # Sieve.keep/drop count word lengths in batches of BATCH_ROWS: the histograms must be those of a batch.
    texts = [("word " * (i % 700)).strip() + ("" if i % 5 else " 你好") for i in range(2 * BATCH_ROWS + 37)]
    docs = [{"id": f"d{i}", "text": t, "source": "s", "meta": "{}"} for i, t in enumerate(texts)]
    # the second batch finds the first two reasons with one example each, and a new reason
    reasons = ["too_short" if i % 7 else ("language" if i < BATCH_ROWS + 20 else "offensive") for i in range(len(docs))]
    one = Sieve(tmp_path / "one", "0")
    for doc in docs[: BATCH_ROWS + 5]:
        one.keep(doc)
    for doc, reason in zip(docs[BATCH_ROWS + 5 :], reasons[BATCH_ROWS + 5 :]):
        one.drop(doc, reason)
    batch = Sieve(tmp_path / "batch", "0")
    table = pa.Table.from_pylist(docs, schema=DOC_SCHEMA)
    batch.keep_batch(table.slice(0, BATCH_ROWS + 5))
    for start, end in ((BATCH_ROWS + 5, BATCH_ROWS + 7), (BATCH_ROWS + 7, len(docs))):
        batch.drop_batch(table.slice(start, end - start), reasons[start:end], [""] * (end - start))
    a, b = one.close(), batch.close()
    assert a.lengths == b.lengths and sum(a.lengths["kept"]) == BATCH_ROWS + 5
    assert sum(a.lengths["dropped"]) == len(docs) - BATCH_ROWS - 5
    assert a.dropped == b.dropped and list(a.dropped) == list(b.dropped) == ["language", "too_short", "offensive"]
    assert a.examples == b.examples and all(len(shown) == 2 for shown in a.examples.values())
