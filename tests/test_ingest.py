import gzip
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import IngestConfig
from pipeline.ingest import IngestError, ingest
from pipeline.io.docshards import iter_docs
from pipeline.manifest import read_manifest
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
    assert [(r["reason"], r["detail"]) for r in bad] == [("malformed_json",
                                                          "corpus/extra.jsonl:2: Unterminated string starting at")]


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
    (d / "b.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(b"para one\nline two\n\npara two\n"))
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
    assert texts["src/b.txt.zst"] == ["para one\nline two\n\npara two"]  # one work: no heading, no story break
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


# --- split modes and size bounds -------------------------------------------------------------------


@pytest.mark.parametrize("split, expected", [
    ("file", ["a\nb\n\nc\n%\nd"]),
    ("paragraph", ["a\nb", "c\n%\nd"]),
    ("separator", ["a\nb\n\nc", "d"]),
    ("line", ["a", "b", "c", "%", "d"]),
])
def test_split_modes(tmp_path: Path, split: str, expected: list[str]):
    (tmp_path / "t.txt").write_text("a\nb\n\nc\n%\nd\n")
    m = ingest([str(tmp_path / "t.txt")], tmp_path / split / "ingest", IngestConfig(split=split))
    assert [d["text"] for d in iter_docs(m.output_list("docs"))] == expected
    assert m.stats["dropped"] == ({"empty": 1} if split == "line" else {})  # the blank line in line mode


def test_oversized_documents_are_quarantined_with_a_head(tmp_path: Path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "big.txt").write_text("x" * 300 + "\n" + "y" * 50 + "\n\nsmall paragraph\n")
    (d / "big.jsonl").write_text(json.dumps({"text": "z" * 300}) + "\n" + json.dumps({"text": "fine"}) + "\n")
    m = ingest([str(d)], tmp_path / "run" / "ingest", IngestConfig(max_doc_mb=200 / 2**20))
    assert sorted(d["text"] for d in iter_docs(m.output_list("docs"))) == ["fine", "small paragraph"]
    rows = _excluded(m)
    assert [r["reason"] for r in rows] == ["too_large", "too_large"]
    assert max(len(r["text"]) for r in rows) <= 200, "only a bounded head is kept"


def test_skipped_files_and_clashing_labels(tmp_path: Path):
    for name in ("a", "b"):
        (tmp_path / name / "corpus").mkdir(parents=True)
        (tmp_path / name / "corpus" / "x.txt").write_text("some story text here")
    (tmp_path / "a" / "corpus" / "page.html").write_text("<p>not a corpus format</p>")
    m = ingest([str(tmp_path / "a" / "corpus")], tmp_path / "r1" / "ingest", IngestConfig())
    assert m.stats["files_skipped"] == {".html": 1}
    with pytest.raises(IngestError, match="both labelled 'corpus/x.txt'"):
        ingest([str(tmp_path / "a" / "corpus"), str(tmp_path / "b" / "corpus")], tmp_path / "r2" / "ingest",
               IngestConfig())


def test_cli_empty_corpus_exits_nonzero(tmp_path: Path, capsys):
    from flows.cli import main

    (tmp_path / "empty.txt").write_text("\n\n")
    assert main(["stage", "ingest", "--input", str(tmp_path / "empty.txt"), "--out",
                 str(tmp_path / "run" / "ingest")]) != 0
    assert "empty corpus" in capsys.readouterr().err
    assert not (tmp_path / "run" / "ingest" / "manifest.json").exists()


# --- archives --------------------------------------------------------------------------------------


def _tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    import io
    import tarfile

    links = links or {}
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return path


def test_archives_are_unpacked_into_the_cache(tmp_path: Path):
    import zipfile

    cfg = IngestConfig(cache_dir=str(tmp_path / "cache"))
    tar = _tar(tmp_path / "corpus.tar.gz", {"stories/a.txt": b"A story about a fox.\n",
                                            "b.jsonl": b'{"text": "json doc"}\n'})
    with zipfile.ZipFile(tmp_path / "more.zip", "w") as zf:
        zf.writestr("poems/p.txt", "A poem\nof two lines\n")
    m = ingest([str(tar), str(tmp_path / "more.zip")], tmp_path / "run" / "ingest", cfg)
    assert [d["id"] for d in iter_docs(m.output_list("docs"))] == [
        "corpus.tar.gz/b.jsonl:1", "corpus.tar.gz/stories/a.txt:1", "more.zip/poems/p.txt:1"]
    assert sorted(Path(r.path).name for r in m.inputs) == ["corpus.tar.gz", "more.zip"], "the archives are the inputs"


@pytest.mark.parametrize("member, link", [("../evil.txt", None), ("/tmp/evil.txt", None),
                                          ("ok/link.txt", "../../secret.txt")])
def test_escaping_archive_members_are_refused(tmp_path: Path, member: str, link: str | None):
    cfg = IngestConfig(cache_dir=str(tmp_path / "cache"))
    members = {"fine.txt": b"fine text"} | ({} if link else {member: b"evil text"})
    tar = _tar(tmp_path / "bad.tar.gz", members, {member: link} if link else {})
    with pytest.raises(IngestError, match="escape|is a link"):
        ingest([str(tar)], tmp_path / "run" / "ingest", cfg)
    assert not (tmp_path / "evil.txt").exists()
    assert not any((tmp_path / "cache" / "archives").iterdir()), "nothing half-unpacked is left to be trusted"


def test_zip_member_escaping_is_refused(tmp_path: Path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr("../../evil.txt", "evil text")
    with pytest.raises(IngestError, match="escape"):
        ingest([str(tmp_path / "bad.zip")], tmp_path / "run" / "ingest",
               IngestConfig(cache_dir=str(tmp_path / "cache")))
    assert not (tmp_path / "evil.txt").exists()


# --- URLs (a local server on 127.0.0.1, never the network) ----------------------------------------


@pytest.fixture
def http_root(tmp_path: Path, monkeypatch):
    """(folder served over http, base URL, list of requested paths); the server stops after the test."""
    import functools
    import threading
    import time
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root, requests = tmp_path / "www", []
    root.mkdir()

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path.startswith("/slow"):
                time.sleep(1.5)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_url_source_is_downloaded_pinned_and_cached(http_root, tmp_path: Path):
    import hashlib

    root, base, requests = http_root
    data = gzip.compress(b"A poem\nof two lines\n%\nAnother poem\n")
    (root / "poems.txt.gz").write_bytes(data)
    cfg = IngestConfig(cache_dir=str(tmp_path / "cache"))
    url = f"{base}/poems.txt.gz#sha256={hashlib.sha256(data).hexdigest()}"
    m = ingest([url], tmp_path / "r1" / "ingest", cfg)
    host = base.removeprefix("http://")
    assert [d["id"] for d in iter_docs(m.output_list("docs"))] == [f"{host}/poems.txt.gz:1", f"{host}/poems.txt.gz:4"]
    assert m.inputs[0].path == f"{base}/poems.txt.gz" and m.inputs[0].sha256 == hashlib.sha256(data).hexdigest()
    ingest([url], tmp_path / "r2" / "ingest", cfg)
    assert requests == ["/poems.txt.gz"], "the second run reads the cache"
    assert not list((tmp_path / "cache").rglob(".*part*")), "no temporary download is left behind"


def test_cli_stage_ingest_takes_a_url(http_root, tmp_path: Path):
    from flows.cli import main

    root, base, requests = http_root
    (root / "story.txt").write_text("Once upon a time there was a URL.\n", encoding="utf-8")
    out = tmp_path / "ingest"
    assert main(["stage", "ingest", "--input", f"{base}/story.txt", "--out", str(out),
                 "--set", f"ingest.cache_dir={tmp_path / 'cache'}"]) == 0
    assert requests == ["/story.txt"]
    assert [d["text"] for d in iter_docs(read_manifest(out / "manifest.json").output_list("docs"))] == [
        "Once upon a time there was a URL."]


def test_url_errors(http_root, tmp_path: Path):
    root, base, _ = http_root
    (root / "a.txt").write_text("some text that is long enough to be over the cap\n")
    cache = tmp_path / "cache"
    with pytest.raises(IngestError, match="sha256 mismatch"):
        ingest([f"{base}/a.txt#sha256={'0' * 64}"], tmp_path / "r1" / "ingest", IngestConfig(cache_dir=str(cache)))
    assert not [p for p in cache.rglob("*") if p.is_file()], "a mismatching download is deleted"
    with pytest.raises(IngestError, match="cap"):
        ingest([f"{base}/a.txt"], tmp_path / "r2" / "ingest",
               IngestConfig(cache_dir=str(cache), max_download_mb=10 / 2**20))
    with pytest.raises(IngestError, match="HTTP 404"):
        ingest([f"{base}/missing.txt"], tmp_path / "r3" / "ingest", IngestConfig(cache_dir=str(cache)))
    (root / "slow.txt").write_text("late text\n")
    with pytest.raises(OSError):  # transient: the flow's retries apply
        ingest([f"{base}/slow.txt"], tmp_path / "r4" / "ingest",
               IngestConfig(cache_dir=str(cache), download_timeout_s=0.3))


# --- Hugging Face datasets (local folders only) -----------------------------------------------------


def test_hf_dataset_sources(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets", reason="the optional 'hf' extra (datasets) is not installed")
    splits = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["first story", "second story"], "kind": ["a", "b"]}),
        "validation": datasets.Dataset.from_dict({"text": ["held out story"], "kind": ["c"]}),
    })
    splits.save_to_disk(str(tmp_path / "saved"))
    folder = tmp_path / "jsonfolder"
    folder.mkdir()
    (folder / "part.jsonl").write_text(json.dumps({"text": "streamed doc", "n": 1}) + "\n"
                                       + json.dumps({"n": 2}) + "\n")
    specs = [f"hf:{tmp_path / 'saved'}", f"hf:{tmp_path / 'saved'}:validation", f"hf:{folder}"]
    m = ingest(specs, tmp_path / "run" / "ingest", IngestConfig())
    docs = {d["id"]: (d["text"], json.loads(d["meta"])) for d in iter_docs(m.output_list("docs"))}
    assert docs == {"saved/train:1": ("first story", {"kind": "a"}), "saved/train:2": ("second story", {"kind": "b"}),
                    "saved/validation:1": ("held out story", {"kind": "c"}),
                    "jsonfolder/train:1": ("streamed doc", {"n": 1})}
    assert m.stats["dropped"] == {"missing_text_field": 1}
    assert any(Path(r.path).name == "part.jsonl" for r in m.inputs), "local dataset files are the inputs"
    with pytest.raises(IngestError, match="no split 'test'"):
        ingest([f"hf:{tmp_path / 'saved'}:test"], tmp_path / "r2" / "ingest", IngestConfig())
