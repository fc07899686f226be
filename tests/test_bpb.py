"""Bits per byte is a property of the model and the text, not of the tokenizer: two tokenizers' models that
spend the same bits on each byte of the same text get the same val_bpb."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sentencepiece as spm
import torch

from model.tokenizer import Tokenizer, train_tokenizer
from pipeline.eval.bpb import evaluate_loss
from pipeline.io.tokenshards import TokenShards
from tests.conftest import POEM, STORIES

BITS_PER_BYTE = 1.25
BLOCK = 16
TEXTS = STORIES * 2 + [POEM, "  Leading spaces,\ttabs and a café.", "x"]


def _dummy_prefix_tokenizer(path: Path) -> Tokenizer:
    """A tokenizer as Quill trained them before it turned SentencePiece's dummy prefix off."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS * 2), model_prefix=str(path.with_suffix("")), vocab_size=360,
        character_coverage=1.0, byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        user_defined_symbols=["\n"], unk_id=0, bos_id=1, eos_id=2, pad_id=3, hard_vocab_limit=False, minloglevel=2)
    return Tokenizer(path)


class Oracle(torch.nn.Module):
    """Puts probability 2**-(BITS_PER_BYTE * bytes) on each next token, where `bytes` is how many bytes of the
    document's text that token adds (measured by decoding, independent of token_bytes): the same bits per
    byte of text under any tokenizer. Windows arrive in TokenShards.sequential's order."""

    def __init__(self, stream: np.ndarray, bits: np.ndarray, vocab: int, starts: np.ndarray):
        super().__init__()
        self.stream, self.bits, self.vocab, self.starts, self.seen = stream, bits, vocab, starts, 0

    def forward(self, x):
        B, T = x.shape
        logits = torch.zeros(B, T, self.vocab, dtype=torch.float64)
        for b, s in enumerate(self.starts[self.seen : self.seen + B]):
            assert torch.equal(x[b], torch.as_tensor(self.stream[s : s + T].astype(np.int64)))
            for t in range(T):
                p = 2.0 ** -self.bits[s + t + 1]
                # softmax with one logit a and vocab-1 zeros: a = log(p (V-1) / (1-p)); p ~ 1 for eos
                a = 60.0 if p > 1 - 1e-12 else math.log(p * (self.vocab - 1) / (1 - p))
                logits[b, t, self.stream[s + t + 1]] = a
        self.seen += B
        return logits, None


def _bpb(tok: Tokenizer, tmp: Path, prefix_after: int | None) -> float:
    stream, bits = [], []
    for text in TEXTS:
        ids = tok.encode(text)
        before = 0
        for i, token in enumerate(ids):
            now = len(tok.decode(ids[: i + 1]).encode("utf-8"))
            stream.append(token)
            bits.append(BITS_PER_BYTE * (now - before))
            before = now
        assert before == len(text.encode("utf-8"))
        stream.append(tok.eos_id)
        bits.append(0.0)
    stream_arr = np.asarray(stream, dtype=np.uint16)
    tmp.mkdir()
    pq.write_table(pa.table({"tokens": stream_arr}), tmp / "shard_00000.parquet")
    shards = TokenShards([tmp / "shard_00000.parquet"], cache_dir=tmp / "cache")
    oracle = Oracle(stream_arr, np.asarray(bits), tok.vocab_size, shards.sequential_starts(BLOCK))
    token_bytes = np.asarray(tok.token_bytes(), dtype=np.int32)
    out = evaluate_loss(oracle, shards, token_bytes, BLOCK, 4, torch.device("cpu"), prefix_after=prefix_after)
    assert oracle.seen == len(oracle.starts)
    return out["bpb"]


def test_bpb_agrees_across_tokenizers_for_equal_bits_per_byte(tmp_path: Path):
    new = train_tokenizer(TEXTS * 2, tmp_path / "new.model", vocab_size=360, character_coverage=1.0)
    unigram = train_tokenizer(TEXTS * 2, tmp_path / "unigram.model", vocab_size=420, model_type="unigram",
                              character_coverage=1.0)
    old = _dummy_prefix_tokenizer(tmp_path / "old.model")
    assert (new.dummy_prefix, unigram.dummy_prefix, old.dummy_prefix) == (False, False, True)
    assert new.encode(TEXTS[0]) != unigram.encode(TEXTS[0])
    found = {name: _bpb(tok, tmp_path / name, tok.eos_id if tok.dummy_prefix else None)
             for name, tok in (("new", new), ("unigram", unigram), ("old", old))}
    assert found == pytest.approx(dict.fromkeys(found, BITS_PER_BYTE), rel=1e-6)
    # Without taking the dummy "▁" off, the old tokenizer's documents look one byte longer each.
    assert _bpb(old, tmp_path / "old_uncorrected", None) < BITS_PER_BYTE * 0.995
