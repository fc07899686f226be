"""benchmarks.train quality --corpus: any UTF-8 file, 90/10 split by characters, one JSON line per variant."""

import json

import pytest

from benchmarks import train as bench

pytestmark = pytest.mark.usefixtures("one_thread")


def _corpus(tmp_path):
    from tests.conftest import POEM, STORIES

    path = tmp_path / "little corpus.txt"
    path.write_text("\n\n".join(STORIES * 4 + [POEM] * 3), encoding="utf-8")
    return path


def test_quality_on_any_corpus_prints_one_json_line_per_variant(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(bench.BASELINE["tokenize"], "vocab_size", 400)  # a small file has few pieces
    corpus, out = _corpus(tmp_path), tmp_path / "q.jsonl"
    argv = ["quality", "--corpus", str(corpus), "--budget", "1.5e10", "--variants", "base", "best", "--work",
            str(tmp_path / "work"), "--results", str(out)]
    assert bench.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["variant"] for r in lines] == ["base", bench.BEST]
    for r in lines:
        assert {"variant", "val_bpc", "flops", "steps", "tokens", "seconds"} <= set(r)
        assert r["corpus"] == corpus.name and 0 < r["val_bpc"] < 20
        assert r["steps"] >= 1 and 0 < r["flops"] <= 1.5e10
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    # the split: the first 90 % of the characters train, the last 10 % validate
    stats = json.loads(bench.prepare(tmp_path / "work", bench.variant_settings("base")["tokenize"],
                                     corpus).read_text())["stats"]
    n = len(corpus.read_text(encoding="utf-8"))
    assert stats["chars_train"] == int(0.9 * n) and stats["chars_val"] == n - int(0.9 * n)


def test_quality_refuses_a_corpus_that_is_not_utf8_or_not_there(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 ".encode("latin-1") * 400)
    with pytest.raises(ValueError, match="latin1.txt: not UTF-8"):
        bench.read_corpus(bad)
    assert bench.main(["quality", "--corpus", str(tmp_path / "missing.txt")]) == 2
