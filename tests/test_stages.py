"""The data stages on the shipped sample corpus: every planted problem is caught, nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.clean import clean
from pipeline.config import CleanConfig, FilterConfig, IngestConfig
from pipeline.docs import iter_docs
from pipeline.filter import filter_docs
from pipeline.ingest import ingest
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("sample") / "run"
    ing = ingest([str(SAMPLE)], run / "ingest", IngestConfig())
    cl = clean(ing.path, run / "clean", CleanConfig())
    fi = filter_docs(cl.path, run / "filter", FilterConfig())
    return ing, cl, fi


def _excluded(m) -> list[dict]:
    return [r for p in m.output_list("excluded") for r in pq.read_table(p).to_pylist()]


def test_nothing_is_lost(sample_run):
    for m in sample_run:
        s = m.stats
        assert s["docs_in"] == s["docs_kept"] + sum(s["dropped"].values())
        assert len(_excluded(m)) == sum(s["dropped"].values())
        assert len(list(iter_docs(m.output_list("docs")))) == s["docs_kept"]
    ing, cl, fi = sample_run
    assert cl.stats["docs_in"] == ing.stats["docs_kept"] and fi.stats["docs_in"] == cl.stats["docs_kept"]


def test_planted_problems_are_caught(sample_run):
    """data/sample/README.md lists what is planted; these are its counts."""
    ing, cl, fi = sample_run
    assert ing.stats["docs_in"] == 188
    assert cl.stats["dropped"]["language"] >= 9  # 3 French, 3 German, 3 Spanish
    drop = fi.stats["dropped"]
    assert drop["exact_duplicate"] == 5 and drop["near_duplicate"] == 5 and drop["offensive"] == 6
    assert fi.stats["offensive_lines_dropped"] == 2
    assert fi.stats["pii_redacted"] == {"EMAIL": 2, "PHONE": 3, "IP": 1, "CREDIT_CARD": 1}
    assert fi.stats["docs_kept"] == 151
    kept = " ".join(d["text"] for d in iter_docs(fi.output_list("docs")))
    for planted in ("walter.pike@example.com", "4111 1111 1111 1111", "203.0.113.42", "Ã©", "Accept all cookies"):
        assert planted not in kept
    for fairy_tale in ("wolf", "dragon", "witch"):
        assert fairy_tale in kept, "fairy-tale violence is literature, not hate speech"


def test_reasons_and_details_are_recorded(sample_run):
    _, cl, fi = sample_run
    rows = _excluded(fi)
    dup = next(r for r in rows if r["reason"] == "near_duplicate")
    assert dup["detail"].startswith("duplicate of sample/")
    off = next(r for r in rows if r["reason"] == "offensive")
    assert off["score"] >= 0.5
    lang = next(r for r in _excluded(cl) if r["reason"] == "language")
    assert lang["detail"].split()[0] in {"fr", "de", "es"}


def test_data_reports(sample_run):
    for m in sample_run:
        report = m.output("report").read_text()
        assert f"# {m.stage} report" in report and f"**{m.stats['docs_kept']}**" in report
        assert m.output("lengths_plot").read_bytes()[:4] == b"\x89PNG"
    fi = sample_run[2]
    assert "| offensive | 6 |" in fi.output("report").read_text()
    assert fi.output("scores_plot").exists()


def test_filter_line_mode_vs_document_mode(sample_run, tmp_path: Path):
    _, cl, _ = sample_run
    doc_mode = filter_docs(cl.path, tmp_path / "run" / "filter",
                           FilterConfig.model_validate({"toxicity": {"mode": "document"}}))
    assert doc_mode.stats["offensive_lines_dropped"] == 0
    assert doc_mode.stats["dropped"]["offensive"] == 8  # the two long stories go whole
