import gzip
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import IngestConfig
from pipeline.docs import iter_docs
from pipeline.ingest import IngestError, ingest
from tests.conftest import POEM


def _excluded(m):
    return [r for p in m.output_list("excluded") for r in pq.read_table(p).to_pylist()]


def test_ingest_folder(corpus_dir: Path, tmp_path: Path):
    m = ingest([str(corpus_dir)], tmp_path / "run" / "ingest", IngestConfig())
    docs = list(iter_docs(m.output_list("docs")))
    assert m.stats["docs_in"] == m.stats["docs_kept"] + sum(m.stats["dropped"].values())
    assert len(docs) == 24 + 2 + 3  # stories (separator split), poems ('%' split), valid JSONL records
    assert docs[0]["id"] == "corpus/extra.jsonl:1" and json.loads(docs[0]["meta"]) == {"kind": "shout"}
    poems = [d for d in docs if d["source"] == "corpus/poems.txt"]
    assert poems[0]["text"] == POEM, "line and stanza breaks inside a poem are kept"
    assert not any("documentation" in d["text"] for d in docs), "README files are skipped"
    bad = _excluded(m)
    assert [(r["reason"], r["detail"]) for r in bad] == [("malformed_json", "corpus/extra.jsonl:2: Unterminated string starting at")]


def test_ids_are_deterministic(corpus_dir: Path, tmp_path: Path):
    a = ingest([str(corpus_dir)], tmp_path / "a" / "ingest", IngestConfig())
    b = ingest([str(corpus_dir)], tmp_path / "b" / "ingest", IngestConfig())
    assert [d["id"] for d in iter_docs(a.output_list("docs"))] == [d["id"] for d in iter_docs(b.output_list("docs"))]


def test_formats_and_compression(tmp_path: Path):
    import csv

    import pyarrow as pa
    import zstandard

    d = tmp_path / "src"
    d.mkdir()
    with gzip.open(d / "a.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"body": {"text": "gz story"}}) + "\n")
    (d / "b.txt.zst").write_bytes(zstandard.ZstdCompressor().compress("para one\nline two\n\npara two\n".encode()))
    with open(d / "c.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["body"])
        w.writeheader()
        w.writerow({"body": "csv, with comma"})
    pq.write_table(pa.table({"body": ["parquet doc"]}), d / "d.parquet")
    (d / "e.json").write_text(json.dumps([{"body": ["line a", "line b"]}]))
    cfg = IngestConfig(text_field="body")
    m = ingest([str(d)], tmp_path / "run" / "ingest", cfg.model_copy(update={"text_field": "body"}))
    texts = {d["source"]: [] for d in iter_docs(m.output_list("docs"))}
    for doc in iter_docs(m.output_list("docs")):
        texts[doc["source"]].append(doc["text"])
    assert texts["src/b.txt.zst"] == ["para one\nline two", "para two"]
    assert texts["src/c.csv"] == ["csv, with comma"] and texts["src/d.parquet"] == ["parquet doc"]
    assert texts["src/e.json"] == ["line a\nline b"]
    assert [r["reason"] for r in _excluded(m)] == ["missing_text_field"]  # the nested gz record has body.text
    m2 = ingest([str(d / "a.jsonl.gz")], tmp_path / "run2" / "ingest", IngestConfig(text_field="body.text"))
    assert [d["text"] for d in iter_docs(m2.output_list("docs"))] == ["gz story"]


def test_bad_input(tmp_path: Path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    (d / "latin.txt").write_bytes("caf\xe9 au lait, a fine drink\n".encode("latin-1"))
    m = ingest([str(d)], tmp_path / "r1" / "ingest", IngestConfig())
    assert m.stats["invalid_utf8_lines"] == 1 and m.stats["dropped"] == {"binary_file": 1}
    assert "\ufffd" in next(iter_docs(m.output_list("docs")))["text"]
    with pytest.raises(IngestError, match="empty corpus"):
        ingest([str(d)], tmp_path / "r2" / "ingest", IngestConfig(encoding_errors="quarantine"))
    with pytest.raises(IngestError, match="no such file"):
        ingest([str(tmp_path / "missing")], tmp_path / "r3" / "ingest", IngestConfig())
    with pytest.raises(IngestError, match="matches no file"):
        ingest([str(tmp_path / "*.nothing")], tmp_path / "r4" / "ingest", IngestConfig())


def test_link_escaping_the_folder_is_refused(tmp_path: Path):
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the corpus")
    d = tmp_path / "src"
    d.mkdir()
    (d / "ok.txt").write_text("fine story text")
    os.symlink(outside, d / "link.txt")
    with pytest.raises(IngestError, match="outside the source folder"):
        ingest([str(d)], tmp_path / "run" / "ingest", IngestConfig())
