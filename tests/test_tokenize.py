from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from model.tokenizer import Tokenizer
from pipeline.config import IngestConfig, TokenizeConfig
from pipeline.data import TokenShards
from pipeline.docs import iter_docs
from pipeline.ingest import ingest
from pipeline.tokenize import tokenize

EXOTIC = [
    "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。",
    "Emoji 🦊🌙✨ and rare symbols: ∮ ℵ₀ ⅞ ǂ ꙮ — “quotes” ‘too’.",
    "  leading spaces, trailing spaces  \n\n\ttabs\tand\r\nwindows newlines",
]


@pytest.fixture
def tok_run(corpus_dir: Path, tmp_path: Path):
    (corpus_dir / "exotic.jsonl").write_text("\n".join(__import__("json").dumps({"text": t}) for t in EXOTIC) + "\n")
    docs = ingest([str(corpus_dir)], tmp_path / "run" / "ingest", IngestConfig())
    cfg = TokenizeConfig(vocab_size=400, val_fraction=0.2, input_sentence_size=1000)
    return docs, tokenize(docs.path, tmp_path / "run" / "tokenize", cfg), cfg


def test_round_trip_every_document(tok_run):
    docs, m, _ = tok_run
    tok = Tokenizer(m.output("tokenizer"))
    texts = [d["text"] for d in iter_docs(docs.output_list("docs"))] + EXOTIC
    for text in texts:
        assert tok.decode(tok.encode(text)) == text


def test_shards_decode_back_in_order_and_splits_are_disjoint(tok_run):
    docs, m, _ = tok_run
    tok = Tokenizer(m.output("tokenizer"))
    index = pq.read_table(m.output("index")).to_pylist()
    by_id = {d["id"]: d["text"] for d in iter_docs(docs.output_list("docs"))}
    assert {r["id"] for r in index} == set(by_id)
    splits = {"train": TokenShards(m.output_list("train")).tokens, "val": TokenShards(m.output_list("val")).tokens}
    val_ids = {r["id"] for r in index if r["split"] == "val"}
    train_ids = {r["id"] for r in index if r["split"] == "train"}
    assert val_ids and train_ids and not (val_ids & train_ids)
    for r in index:
        ids = splits[r["split"]][r["offset"] : r["offset"] + r["length"]].tolist()
        assert ids[-1] == tok.eos_id
        assert tok.decode(ids[:-1]) == by_id[r["id"]]
    assert m.stats["tokens_train"] + m.stats["tokens_val"] == sum(r["length"] for r in index)


def test_token_bytes_and_manifest(tok_run):
    _, m, cfg = tok_run
    tb = np.load(m.output("token_bytes"))
    tok = Tokenizer(m.output("tokenizer"))
    assert len(tb) == tok.vocab_size and tb[tok.eos_id] == 0
    assert tb[tok.sp.piece_to_id("<|story|>")] == 0
    assert m.stats["vocab_size"] == tok.vocab_size and m.stats["bytes_per_token"] > 1
    assert pq.read_schema(m.output_list("train")[0]).field("tokens").type == "uint16"


def test_deterministic(tok_run, tmp_path: Path):
    docs, m, cfg = tok_run
    again = tokenize(docs.path, tmp_path / "other" / "tokenize", cfg)
    assert m.output("tokenizer").read_bytes() == again.output("tokenizer").read_bytes()
    assert np.array_equal(TokenShards(m.output_list("train")).tokens, TokenShards(again.output_list("train")).tokens)


def test_too_small_vocab_is_a_clear_error(corpus_dir: Path, tmp_path: Path):
    docs = ingest([str(corpus_dir)], tmp_path / "run" / "ingest", IngestConfig())
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        tokenize(docs.path, tmp_path / "run" / "tokenize", TokenizeConfig(vocab_size=100))
    assert not (tmp_path / "run" / "tokenize" / "manifest.json").exists()
