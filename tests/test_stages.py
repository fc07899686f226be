"""The data stages on the shipped sample corpus: every planted problem is caught, nothing is lost,
and a stage that dies midway leaves nothing a rerun would trust."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.clean as clean_module
from pipeline.clean import clean
from pipeline.config import CleanConfig, FilterConfig, IngestConfig
from pipeline.filter import _with_score, _with_scores, filter_docs
from pipeline.ingest import ingest
from pipeline.io.docshards import iter_docs
from pipeline.text.offensive.score import offensive_score
from tests.conftest import REPO, SAMPLE, STORIES


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
    report = fi.output("report").read_text()
    assert "| offensive | 6 |" in report and fi.output("scores_plot").exists()
    assert "## Representation audit" in report and fi.stats["audit"]["docs"] == fi.stats["docs_kept"]
    assert set(fi.stats["audit"]["mentions"]) == {"female", "male", "young", "old"}


def test_kept_documents_carry_their_offensive_score(sample_run):
    ing, _, fi = sample_run
    source_meta = {d["id"]: json.loads(d["meta"]) for d in iter_docs(ing.output_list("docs"))}
    kept = list(iter_docs(fi.output_list("docs")))
    scored = 0
    for doc in kept:
        meta = json.loads(doc["meta"])
        assert meta["offensive_score"] == round(offensive_score(doc["text"]), 4) < 0.5, doc["id"]
        assert meta.keys() - {"offensive_score", "pii_redacted"} == source_meta[doc["id"]].keys(), doc["id"]
        scored += meta["offensive_score"] > 0
    assert scored >= 1 and sum("pii_redacted" in json.loads(d["meta"]) for d in kept) >= 3


_METAS = st.one_of(st.none(), st.sampled_from(["", "{}", '{"offensive_score": 0.25}', '{"a": "}"}']),
                   st.dictionaries(st.text(max_size=4), st.one_of(st.integers(), st.text(max_size=4)), max_size=3)
                   .map(lambda d: json.dumps(d, ensure_ascii=False)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_METAS, st.one_of(st.just(0.0), st.floats(0, 1))), max_size=12))
def test_scores_are_written_into_meta_as_one_by_one(rows):
    metas, scores = [m for m, _ in rows], np.array([s for _, s in rows], dtype=np.float64)
    column = pa.chunked_array([pa.array(metas[:3], pa.string()), pa.array(metas[3:], pa.string())])
    assert _with_scores(column, scores).to_pylist() == [_with_score(m, s) for m, s in zip(metas, scores.tolist())]


def test_filter_line_mode_vs_document_mode(sample_run, tmp_path: Path):
    _, cl, _ = sample_run
    doc_mode = filter_docs(cl.path, tmp_path / "run" / "filter",
                           FilterConfig.model_validate({"offensive": {"mode": "document"}}))
    assert doc_mode.stats["offensive_lines_dropped"] == 0
    assert doc_mode.stats["dropped"]["offensive"] == 8  # the two long stories go whole


# --- nothing lost, on every fixture corpus ---------------------------------------------------------


def _bad_corpus(root: Path) -> Path:
    """Every kind of bad input next to a few good stories."""
    d = root / "bad"
    d.mkdir()
    (d / "good.txt").write_text("\n<|endoftext|>\n".join(STORIES[:4]) + "\n", encoding="utf-8")
    (d / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    (d / "latin.txt").write_bytes(("caf\xe9 au lait is what the old sailor drank every morning "
                                   "by the sea\n").encode("latin-1"))
    records = [{"text": STORIES[5]}, '{"text": "broken', {"body": "no text field"}, {"text": "   "},
               {"text": "w" * 3000}]
    (d / "mixed.jsonl").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    (d / "rows.csv").write_text("title,body\na,no text column here\n")
    return d


@pytest.fixture(scope="module", params=["sample", "small", "bad"])
def every_corpus(request, tmp_path_factory, corpus_dir_module):
    root = tmp_path_factory.mktemp(request.param)
    source = {"sample": SAMPLE, "small": corpus_dir_module, "bad": None}[request.param] or _bad_corpus(root)
    ing = ingest([str(source)], root / "run" / "ingest", IngestConfig(max_doc_mb=2000 / 2**20))
    cl = clean(ing.path, root / "run" / "clean", CleanConfig())
    fi = filter_docs(cl.path, root / "run" / "filter", FilterConfig(audit={"counterfactual": True}))
    return ing, cl, fi


def _ids(paths: list[Path]) -> list[str]:
    return [i for p in paths for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]


def test_every_document_is_kept_or_explained(every_corpus):
    previous_kept = None
    for m in every_corpus:
        s, excluded = m.stats, _excluded(m)
        assert s["docs_in"] == s["docs_kept"] + sum(s["dropped"].values())
        assert Counter(r["reason"] for r in excluded) == Counter(s["dropped"]), "one quarantine row per drop"
        assert all(r["reason"] and r["detail"] is not None for r in excluded)
        kept = [i for i in _ids(m.output_list("docs")) if not i.endswith("#swap")]
        assert len(kept) == s["docs_kept"] == len(set(kept))
        if previous_kept is not None:  # each input document is in exactly one place
            assert sorted(kept + [r["id"] for r in excluded]) == sorted(previous_kept)
        previous_kept = kept
    ing = every_corpus[0]
    if ing.stats["dropped"].get("binary_file"):  # the bad corpus: every problem has its reason
        assert set(ing.stats["dropped"]) == {"binary_file", "malformed_json", "missing_text_field", "empty",
                                             "too_large"}
        assert ing.stats["invalid_utf8_lines"] == 1


# --- atomic outputs: a stage that dies leaves nothing a rerun would trust ---------------------------


def test_a_failing_stage_leaves_no_output(tmp_path: Path, monkeypatch):
    ing = ingest([str(SAMPLE)], tmp_path / "run" / "ingest", IngestConfig(shard_docs=60))
    calls = {"n": 0}
    real = clean_module.clean_texts

    def failing(texts, cfg):
        calls["n"] += len(texts) > 1  # not the stage's one-line warm-up
        if calls["n"] > 1:  # the first shard (60 docs, one batch) is written by then
            raise RuntimeError("killed midway")
        return real(texts, cfg)

    monkeypatch.setattr(clean_module, "clean_texts", failing)
    out = tmp_path / "run" / "clean"
    with pytest.raises(RuntimeError, match="killed midway"):
        clean(ing.path, out, CleanConfig(executor="local"))
    partial = out.with_name("clean.partial")
    assert list(partial.glob("docs_*.parquet")) and not (partial / "manifest.json").exists() and not out.exists()
    monkeypatch.setattr(clean_module, "clean_texts", real)
    m = clean(ing.path, out, CleanConfig(executor="local"))
    assert not m.stats.get("skipped") and not partial.exists()
    assert sum(len(_ids([p])) for p in m.output_list("docs")) == m.stats["docs_kept"]


KILLER = """
import os, signal, sys
import pipeline.io.docshards as docs
from pathlib import Path
from pipeline.config import FilterConfig
from pipeline.filter import filter_docs
real = docs.write_table_atomic
def write_then_die(table, path, *args):
    real(table, path, *args)
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: like the OOM killer
docs.write_table_atomic = write_then_die
filter_docs(Path(sys.argv[1]), Path(sys.argv[2]), FilterConfig(executor="local"), force=True)
"""


def test_sigkill_midway_keeps_the_previous_output(sample_run):
    _, cl, fi = sample_run
    before = {p: p.read_bytes() for p in fi.stage_dir.rglob("*") if p.is_file()}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(cl.path), str(fi.stage_dir)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    partial = fi.stage_dir.with_name("filter.partial")
    assert any(partial.rglob("*.parquet")) and not (partial / "manifest.json").exists()
    assert {p: p.read_bytes() for p in fi.stage_dir.rglob("*") if p.is_file()} == before, "previous output intact"
    again = filter_docs(cl.path, fi.stage_dir, FilterConfig())
    assert again.stats.get("skipped") and again.stats["docs_kept"] == fi.stats["docs_kept"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [False, True])
def test_data_stages_show_progress_on_a_terminal_only(tty, corpus_dir, tmp_path, monkeypatch, capsys):
    """ingest, clean and filter show documents and MB per second on a terminal, and print nothing otherwise."""
    from pipeline.clean import clean
    from pipeline.config import CleanConfig, FilterConfig, IngestConfig
    from pipeline.filter import filter_docs
    from pipeline.ingest import ingest

    err = Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    m = ingest([str(corpus_dir)], tmp_path / "ingest", IngestConfig())
    m = clean(m.path, tmp_path / "clean", CleanConfig(executor="local"))
    filter_docs(m.path, tmp_path / "filter", FilterConfig(executor="local"))
    shown = err.getvalue()
    if not tty:
        assert shown == ""
        return
    for desc in ("ingest", "clean", "filter: screen", "filter: write"):
        line = [part for part in shown.split("\r") if part.startswith(desc + ":")][-1]
        assert re.search(r"MB/s", line) and re.search(r"[\d,]+ docs, [\d,]+ docs/s", line), line
    docs_in = m.stats["docs_kept"]  # clean's output is filter's input
    assert f"{docs_in:,} docs" in [p for p in shown.split("\r") if p.startswith("filter: write:")][-1]
