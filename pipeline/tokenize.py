"""Tokenize: train SentencePiece on the filtered corpus and write token shards for training.

    quill stage tokenize --input data/runs/dev/filter/manifest.json --out data/runs/dev/tokenize

Layout, chosen for training reads: each split (`train/`, `val/`) is a sequence of Parquet shards
with one flat `tokens` column (uint16 when the vocabulary fits, else uint32), every document
followed by eos, in row groups of about a million tokens; `docs.parquet` indexes each document's
split, shard, offset and length. A flat column reads back as one contiguous numpy array, so a
training window is a slice, not a gather over rows. The split is by document: a document goes to
validation when the hash of its id falls under `val_fraction`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.tokenizer import Tokenizer, train_tokenizer
from pipeline.config import TokenizeConfig
from pipeline.docs import iter_docs, write_table_atomic
from pipeline.manifest import Manifest, input_refs, read_manifest, run_stage

log = logging.getLogger(__name__)
ROW_GROUP_TOKENS = 1 << 20
SHARD_TOKENS = 1 << 26


def is_val(doc_id: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < val_fraction


def tokenize(in_manifest: Path, out_dir: Path, cfg: TokenizeConfig, force: bool = False) -> Manifest:
    inputs = [in_manifest] + ([Path(cfg.reuse_tokenizer)] if cfg.reuse_tokenizer else [])
    return run_stage("tokenize", out_dir, input_refs(inputs), cfg, lambda tmp: _tokenize(in_manifest, tmp, cfg), force=force)


class _SplitWriter:
    """Appends token arrays of one split and writes shards of at most SHARD_TOKENS tokens."""

    def __init__(self, folder: Path, dtype: np.dtype):
        self.folder, self.dtype = folder, dtype
        folder.mkdir(parents=True, exist_ok=True)
        self.parts: list[np.ndarray] = []
        self.buffered = 0
        self.paths: list[Path] = []
        self.tokens = 0
        self.docs = 0

    def add(self, ids: list[int]) -> tuple[int, int]:
        """Returns (shard index, offset in shard) of the document."""
        arr = np.asarray(ids, dtype=self.dtype)
        where = (len(self.paths), self.buffered)
        self.parts.append(arr)
        self.buffered += len(arr)
        self.tokens += len(arr)
        self.docs += 1
        if self.buffered >= SHARD_TOKENS:
            self.flush()
        return where

    def flush(self) -> None:
        if not self.parts:
            return
        tokens = np.concatenate(self.parts)
        path = self.folder / f"shard_{len(self.paths):05d}.parquet"
        table = pa.table({"tokens": tokens})
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_TOKENS)
        tmp.replace(path)
        self.paths.append(path)
        self.parts, self.buffered = [], 0


def _tokenize(in_manifest: Path, stage_dir: Path, cfg: TokenizeConfig) -> tuple[dict, dict]:
    source = read_manifest(in_manifest)
    shards = source.output_list("docs")
    tok_path = stage_dir / "tokenizer.model"
    if cfg.reuse_tokenizer:
        shutil.copyfile(cfg.reuse_tokenizer, tok_path)
        tok = Tokenizer(tok_path)
    else:
        train_texts = (d["text"] for d in iter_docs(shards) if not is_val(d["id"], cfg.val_fraction))
        tok = train_tokenizer(
            train_texts, tok_path, cfg.vocab_size, cfg.model_type, cfg.character_coverage,
            cfg.control_tokens, cfg.input_sentence_size, cfg.seed,
        )
    dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
    writers = {"train": _SplitWriter(stage_dir / "train", dtype), "val": _SplitWriter(stage_dir / "val", dtype)}
    index: dict[str, list] = {"id": [], "split": [], "shard": [], "offset": [], "length": []}
    n_bytes = {"train": 0, "val": 0}
    n_chars = {"train": 0, "val": 0}
    batch: list[dict] = []

    def encode(batch: list[dict]) -> None:
        for doc, ids in zip(batch, tok.encode_batch([d["text"] for d in batch], num_threads=2)):
            split = "val" if is_val(doc["id"], cfg.val_fraction) else "train"
            shard, offset = writers[split].add(ids + [tok.eos_id])
            for key, value in zip(index, (doc["id"], split, shard, offset, len(ids) + 1)):
                index[key].append(value)
            n_bytes[split] += len(doc["text"].encode("utf-8"))
            n_chars[split] += len(doc["text"])

    for doc in iter_docs(shards):
        batch.append(doc)
        if len(batch) == 1024:
            encode(batch)
            batch = []
    encode(batch)
    for w in writers.values():
        w.flush()
    if writers["train"].tokens == 0 or (cfg.val_fraction > 0 and writers["val"].tokens == 0):
        raise ValueError(
            f"tokenize: split left train={writers['train'].docs} val={writers['val'].docs} documents; "
            f"the corpus is too small for val_fraction={cfg.val_fraction}"
        )
    write_table_atomic(pa.table(index), stage_dir / "docs.parquet")
    np.save(stage_dir / "token_bytes.npy", np.asarray(tok.token_bytes(), dtype=np.int32))
    total_tokens = sum(w.tokens for w in writers.values())
    stats = {
        "vocab_size": tok.vocab_size,
        "tokens_train": writers["train"].tokens,
        "tokens_val": writers["val"].tokens,
        "docs_train": writers["train"].docs,
        "docs_val": writers["val"].docs,
        "bytes_per_token": round(sum(n_bytes.values()) / max(1, total_tokens), 3),
        "bytes_val": n_bytes["val"],
        "chars_val": n_chars["val"],
    }
    log.info("tokenize: vocab %d, %d train / %d val tokens", tok.vocab_size, stats["tokens_train"], stats["tokens_val"])
    outputs = {
        "tokenizer": "tokenizer.model",
        "token_bytes": "token_bytes.npy",
        "index": "docs.parquet",
        "train": [f"train/{p.name}" for p in writers["train"].paths],
        "val": [f"val/{p.name}" for p in writers["val"].paths],
    }
    return outputs, stats
