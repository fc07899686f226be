"""The tokenize stage: round trips, shard contents and order, the split, determinism, tokenizer reuse."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import pipeline.tokenize as tokenize_mod
from model.tokenizer import Tokenizer, training_pieces
from pipeline.config import IngestConfig, TokenizeConfig
from pipeline.ingest import ingest
from pipeline.io.docshards import iter_docs
from pipeline.io.tokenshards import TokenShards
from pipeline.tokenize import tokenize
from tests.conftest import POEM, STORIES, passed_through

EXOTIC = [
    "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。",
    "Emoji 🦊🌙✨ and rare symbols: ∮ ℵ₀ ⅞ ǂ ꙮ — “quotes” ‘too’.",
    "  leading spaces, trailing spaces  \n\n\ttabs\tand\r\nwindows newlines",
    ("Zero width\u200bjoiner👩\u200d👩\u200d👧, combining e\u0301, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, "
     "\U0001F9D1\U0001F3FD\u200d\U0001F52C, 한국어, العربية"),
]
CFG = dict(vocab_size=400, val_fraction=0.2, input_sentence_size=1000)


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    """The conftest stories and poems plus exotic scripts, ingested once per module in shards of 8
    documents so encoding has several tasks to spread over workers. Tests only read it."""
    root = tmp_path_factory.mktemp("tokenize")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "stories.txt").write_text("\n<|endoftext|>\n".join(STORIES * 3) + "\n", encoding="utf-8")
    (corpus / "poems.txt").write_text(POEM + "\n%\n" + POEM.replace("moon", "sun") + "\n", encoding="utf-8")
    (corpus / "exotic.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in EXOTIC) + "\n", encoding="utf-8")
    return passed_through(ingest([str(corpus)], root / "run" / "ingest", IngestConfig(shard_docs=8)), root / "run")


@pytest.fixture(scope="module")
def tok_run(docs):
    cfg = TokenizeConfig(**CFG, num_workers=1)
    return docs, tokenize(docs.path, docs.run_dir / "tokenize", cfg), cfg


def _texts(docs) -> dict[str, str]:
    return {d["id"]: d["text"] for d in iter_docs(docs.output_list("docs"))}


def test_round_trip_every_document(tok_run):
    docs, m, _ = tok_run
    tok = Tokenizer(m.output("tokenizer"))
    for text in list(_texts(docs).values()) + EXOTIC:
        assert tok.decode(tok.encode(text)) == text


def test_shards_decode_back_in_order_and_splits_are_disjoint(tok_run):
    docs, m, _ = tok_run
    tok = Tokenizer(m.output("tokenizer"))
    index = pq.read_table(m.output("index")).to_pylist()
    by_id = _texts(docs)
    assert [r["id"] for r in index] == list(by_id), "index rows follow the input order"
    val_ids = {r["id"] for r in index if r["split"] == "val"}
    train_ids = {r["id"] for r in index if r["split"] == "train"}
    assert val_ids and train_ids and not (val_ids & train_ids)
    assert all(r["split"] == ("val" if tokenize_mod.is_val(r["id"], 0.2) else "train") for r in index)
    for split in ("train", "val"):
        shards = TokenShards(m.output_list(split))
        rows = [r for r in index if r["split"] == split]
        for r in rows:
            ids = shards.arrays[r["shard"]][r["offset"] : r["offset"] + r["length"]].tolist()
            assert ids[-1] == tok.eos_id
            assert tok.decode(ids[:-1]) == by_id[r["id"]]
        # The split's stream is its documents, in input order, back to back.
        stream = np.concatenate([shards.arrays[r["shard"]][r["offset"] : r["offset"] + r["length"]] for r in rows])
        assert np.array_equal(stream, shards.tokens)
    assert m.stats["tokens_train"] + m.stats["tokens_val"] == sum(r["length"] for r in index)
    assert (m.stats["docs_train"], m.stats["docs_val"]) == (len(train_ids), len(val_ids))


def test_token_bytes_and_manifest(tok_run):
    _, m, _ = tok_run
    tb = np.load(m.output("token_bytes"))
    tok = Tokenizer(m.output("tokenizer"))
    assert len(tb) == tok.vocab_size and tb[tok.eos_id] == 0
    assert tb[tok.sp.piece_to_id("<|story|>")] == 0
    assert m.stats["vocab_size"] == tok.vocab_size and m.stats["bytes_per_token"] > 1
    assert m.stats["shards_train"] == len(m.output_list("train")) > 1
    assert {"tokenizer", "token_bytes", "index", "train", "val"} <= set(m.outputs)
    assert pq.read_schema(m.output_list("train")[0]).field("tokens").type == "uint16"


def test_token_bytes_of_every_shard_are_the_texts_utf8_bytes(tok_run):
    """Bits per byte divides by the summed token_bytes of the predicted tokens: exact only if they are the
    bytes of the text, with nothing for eos and no "▁" SentencePiece would put before each document."""
    docs, m, _ = tok_run
    tb = np.load(m.output("token_bytes"))
    assert not Tokenizer(m.output("tokenizer")).dummy_prefix and m.stats["dummy_prefix"] is False
    by_id = _texts(docs)
    index = pq.read_table(m.output("index")).to_pylist()
    for split in ("train", "val"):
        shards = TokenShards(m.output_list(split))
        rows = [r for r in index if r["split"] == split]
        for r in rows:
            ids = shards.arrays[r["shard"]][r["offset"] : r["offset"] + r["length"]]
            assert int(tb[ids].sum()) == len(by_id[r["id"]].encode("utf-8")), r["id"]
        for k, shard in enumerate(shards.arrays):
            texts = [by_id[r["id"]] for r in rows if r["shard"] == k]
            assert int(tb[np.asarray(shard)].sum()) == sum(len(t.encode("utf-8")) for t in texts)
    assert int(tb[TokenShards(m.output_list("val")).tokens].sum()) == m.stats["bytes_val"]


def _files(m) -> dict[str, bytes]:
    stage = m.stage_dir
    return {str(p.relative_to(stage)): p.read_bytes() for p in sorted(stage.rglob("*"))
            if p.is_file() and p.name != "manifest.json" and ".mmap" not in p.parts}


def test_byte_identical_for_any_worker_count(tok_run, tmp_path: Path):
    docs, m, cfg = tok_run
    assert len(docs.output_list("docs")) > 2
    two = tokenize(docs.path, tmp_path / "two" / "tokenize", cfg.model_copy(update={"num_workers": 2}))
    assert two.stats["workers"] == 2
    assert _files(m) == _files(two)
    assert m.outputs == two.outputs


def test_worker_count_is_not_part_of_the_config_hash(tok_run):
    docs, m, cfg = tok_run
    again = tokenize(docs.path, m.stage_dir, cfg.model_copy(update={"num_workers": 2}))
    assert again.stats.get("skipped") is True


def test_exact_row_groups_and_shard_rollover(docs, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(tokenize_mod, "ROW_GROUP_TOKENS", 16)
    monkeypatch.setattr(tokenize_mod, "SHARD_TOKENS", 200)
    m = tokenize(docs.path, tmp_path / "small" / "tokenize", TokenizeConfig(**CFG, num_workers=1))
    tok = Tokenizer(m.output("tokenizer"))
    names = [Path(p).name for p in m.outputs["train"]]
    assert any(n.endswith("_001.parquet") for n in names), "a docs shard rolled over into a second part"
    for path in m.output_list("train"):
        groups = [rg.num_rows for rg in (pq.ParquetFile(path).metadata.row_group(i)
                                         for i in range(pq.ParquetFile(path).num_row_groups))]
        assert all(n == 16 for n in groups[:-1]) and 0 < groups[-1] <= 16
    by_id = _texts(docs)
    shards = TokenShards(m.output_list("train"))
    for r in pq.read_table(m.output("index")).to_pylist():
        if r["split"] == "train":
            ids = shards.arrays[r["shard"]][r["offset"] : r["offset"] + r["length"]].tolist()
            assert tok.decode(ids) == by_id[r["id"]]


def test_reuse_tokenizer_from_path_folder_and_model_uri(tok_run, tmp_path: Path, monkeypatch):
    docs, m, cfg = tok_run
    tok_file = m.output("tokenizer")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "tokenizer.model").write_bytes(tok_file.read_bytes())
    # A stand-in for the MLflow seam: the stage must only call download_checkpoint(uri).
    fake = types.ModuleType("pipeline.tracking")
    fake.download_checkpoint = lambda uri: ckpt if uri == "models:/quill@champion" else None
    monkeypatch.setitem(sys.modules, "pipeline.tracking", fake)
    for i, ref in enumerate([str(tok_file), str(ckpt), "models:/quill@champion"]):
        reuse_cfg = cfg.model_copy(update={"reuse_tokenizer": ref})
        reused = tokenize(docs.path, tmp_path / f"reuse{i}" / "tokenize", reuse_cfg)
        assert reused.output("tokenizer").read_bytes() == tok_file.read_bytes()
        assert np.array_equal(TokenShards(reused.output_list("val")).tokens, TokenShards(m.output_list("val")).tokens)
    assert reused.inputs[-1].path == "models:/quill@champion"
    with pytest.raises(FileNotFoundError, match="no tokenizer.model"):
        tokenize(docs.path, tmp_path / "bad" / "tokenize", cfg.model_copy(update={"reuse_tokenizer": str(tmp_path)}))


def test_unigram_by_config_round_trips_and_is_deterministic(docs, tmp_path: Path):
    cfg = TokenizeConfig(**CFG, model_type="unigram", num_workers=1)
    a, b = (tokenize(docs.path, tmp_path / name / "tokenize", cfg) for name in ("a", "b"))
    assert a.output("tokenizer").read_bytes() == b.output("tokenizer").read_bytes()
    tok = Tokenizer(a.output("tokenizer"))
    assert tok.sp.piece_to_id("<|poem|>") != tok.sp.unk_id()
    for text in list(_texts(docs).values()) + EXOTIC:
        assert tok.decode(tok.encode(text)) == text


def test_long_documents_are_cut_at_line_breaks_for_training():
    text = "\n".join(f"line {i} " + "x" * 30 for i in range(100))
    pieces = list(training_pieces([text, "short"], max_chars=100))
    assert "".join(pieces[:-1]) == text and pieces[-1] == "short"
    assert all(len(p) <= 100 for p in pieces) and all(p.endswith("\n") for p in pieces[:-2])
    assert list(training_pieces(["y" * 250], max_chars=100)) == ["y" * 100, "y" * 100, "y" * 50]


def test_too_small_vocab_is_a_clear_error(docs, tmp_path: Path):
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        tokenize(docs.path, tmp_path / "run" / "tokenize", TokenizeConfig(vocab_size=100))
    assert not (tmp_path / "run" / "tokenize" / "manifest.json").exists()
