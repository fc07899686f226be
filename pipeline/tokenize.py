"""Tokenize: train SentencePiece on the filtered corpus and write token shards for training.

    quill stage tokenize --input data/runs/dev/filter/manifest.json --out data/runs/dev/tokenize
    quill stage tokenize ... --set tokenize.reuse_tokenizer=models:/quill@champion   # keep a vocabulary

Layout, chosen for training reads. Each split (`train/`, `val/`) is a set of Parquet shards with
one flat `tokens` column (uint16 when the vocabulary fits, else uint32), every document followed
by eos, zstd, in row groups of exactly 2**20 tokens (the last of a shard shorter);
`docs.parquet` indexes each document's split, shard (position in the manifest's list for that
split), offset in that shard and length. A flat column reads back as one contiguous array, so a
training window is a slice, not a gather over rows, and a row group is a cheap unit to stream.

Parquet is the durable, portable artefact; it is not what training reads. Compressed pages
cannot be memory-mapped, and uncompressed Parquet is no better: it has no 16-bit physical type
(uint16 is stored as INT32, twice the size) and pyarrow decodes pages into heap buffers even with
`memory_map=True` (measured: a 32 MB column allocated 32 MB). So the reader (`pipeline.io.tokenshards`)
unpacks each shard once into an uncompressed `.npy` sidecar, validated by the shard's size, mtime
and row count, and memory-maps that: zstd on disk and over the wire, zero-copy windows in training.

The split is by document: a document goes to validation when the blake2b hash of its id falls
under `val_fraction`. Encoding runs one task per docs shard, in a process pool (fork on Linux;
each worker loads its own SentencePiece processor; small corpora stay in-process, where starting
workers would cost more than it saves) with SentencePiece's batch encoding threads within. A task
streams its shard in batches of 1024 documents (bounded memory), encodes the next batch in a
thread while it writes this one, and writes its own token shards (`shard_<docs shard>_<part>.parquet`,
atomically), so the output is byte-identical for any worker count.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import re
import shutil
from bisect import bisect_left
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from itertools import accumulate, chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from model.tokenizer import Tokenizer, train_tokenizer
from pipeline.config import TokenizeConfig
from pipeline.manifest import InputRef, Manifest, read_manifest, run_stage, sha256_file, stage_inputs
from pipeline.sieve import require_documents

log = logging.getLogger(__name__)
SPLITS = ("train", "val")
TOTALS = [f"{what}_{s}" for what in ("tokens", "docs", "bytes", "chars") for s in SPLITS]
ROW_GROUP_TOKENS = 1 << 20
SHARD_TOKENS = 1 << 26  # a token shard rolls over after the document that reaches this
AUTO_BYTES_PER_WORKER = 8 << 20  # zstd docs shard bytes (about 25 MB of text) per automatic worker
ENCODE_DOCS = 1024  # documents per SentencePiece batch call: enough to keep its threads busy
# Knobs that change speed, never output: kept out of the config hash so changing them reuses a run.
PERF_ONLY = {"num_workers"}
INDEX_SCHEMA = pa.schema(
    [("id", pa.string()), ("split", pa.string()), ("shard", pa.int64()), ("offset", pa.int64()), ("length", pa.int64())]
)


def is_val(doc_id: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < val_fraction


def tokenize(in_manifest: Path, out_dir: Path, cfg: TokenizeConfig, force: bool = False) -> Manifest:
    in_manifest = Path(in_manifest)
    refs = stage_inputs(in_manifest, "tokenize")
    reuse = None
    if cfg.reuse_tokenizer:
        reuse = resolve_tokenizer(cfg.reuse_tokenizer)
        # A model URI is recorded as given, with the sha of what it resolved to today, so the stage
        # reruns exactly when the champion's vocabulary changed.
        where = cfg.reuse_tokenizer if _is_uri(cfg.reuse_tokenizer) else str(reuse.resolve())
        refs.append(InputRef(path=where, sha256=sha256_file(reuse)))
    stage_cfg = cfg.model_dump(mode="json", exclude=PERF_ONLY)
    work = partial(_tokenize, in_manifest, cfg=cfg, reuse=reuse)
    return run_stage("tokenize", out_dir, refs, stage_cfg, work, force=force)


def _is_uri(ref: str) -> bool:
    return re.match(r"^[A-Za-z][\w+.-]+:/", ref) is not None  # models:/, runs:/, s3://; not C:/


def resolve_tokenizer(ref: str) -> Path:
    """A tokenizer.model from a file, a checkpoint folder, or a logged model URI (models:/quill@champion)."""
    if _is_uri(ref):
        from pipeline.tracking import download_checkpoint  # lazily: MLflow only when a URI is given

        path = download_checkpoint(ref) / "tokenizer.model"
    else:
        path = Path(ref)
        path = path / "tokenizer.model" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"tokenize.reuse_tokenizer={ref!r}: no tokenizer.model at {path}")
    return path


# --- encoding one docs shard (runs in a worker process) -----------------------------------------


class _TokenWriter:
    """Token shards of one split from one docs shard: exact row groups, atomic parts of SHARD_TOKENS."""

    def __init__(self, folder: Path, stem: str, dtype: np.dtype, eos: int):
        self.folder, self.stem, self.dtype, self.eos = folder, stem, dtype, eos
        self.pending: list[np.ndarray] = []
        self.pending_tokens = 0
        self.part_tokens = 0
        self.writer: pq.ParquetWriter | None = None
        self.parts: list[tuple[str, int]] = []  # (name, tokens) of finished parts

    def add(self, docs: list[list[int]]) -> tuple[list[int], list[int]]:
        """Appends eos to each document and buffers them; returns their (parts, offsets in part)."""
        parts: list[int] = []
        offsets: list[int] = []
        while docs:
            starts = list(accumulate((len(d) + 1 for d in docs), initial=self.part_tokens))
            # A part closes after the document that reaches SHARD_TOKENS: documents never straddle parts.
            j = bisect_left(starts, SHARD_TOKENS, 0, len(docs))
            for d in docs[:j]:
                d.append(self.eos)  # the lists are ours: SentencePiece's output, not the caller's data
            parts += [len(self.parts)] * j
            offsets += starts[:j]
            # One conversion per batch, not per document: per-document numpy calls cost more than the copy.
            size = starts[j] - self.part_tokens
            self._buffer(np.fromiter(chain.from_iterable(docs[:j]), dtype=self.dtype, count=size))
            if self.part_tokens >= SHARD_TOKENS:
                self._close_part()
            docs = docs[j:]
        return parts, offsets

    def _buffer(self, tokens: np.ndarray) -> None:
        self.pending.append(tokens)
        self.pending_tokens += len(tokens)
        self.part_tokens += len(tokens)
        if self.pending_tokens >= ROW_GROUP_TOKENS:
            self._write(final=False)

    def _write(self, final: bool) -> None:
        tokens = np.concatenate(self.pending)
        # Only whole row groups until the part ends, so the layout never depends on batch sizes.
        n = len(tokens) if final else len(tokens) // ROW_GROUP_TOKENS * ROW_GROUP_TOKENS
        if self.writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            schema = pa.schema([("tokens", pa.from_numpy_dtype(self.dtype))])
            self.writer = pq.ParquetWriter(self.folder / self._name(tmp=True), schema, compression="zstd")
        self.writer.write_table(pa.table({"tokens": tokens[:n]}), row_group_size=ROW_GROUP_TOKENS)
        self.pending = [tokens[n:]] if n < len(tokens) else []
        self.pending_tokens = len(tokens) - n

    def _name(self, tmp: bool = False) -> str:
        name = f"{self.stem}_{len(self.parts):03d}.parquet"
        return f".{name}.tmp{os.getpid()}" if tmp else name

    def _close_part(self) -> None:
        if self.pending:
            self._write(final=True)
        if self.writer is None:
            return
        self.writer.close()
        os.replace(self.folder / self._name(tmp=True), self.folder / self._name())
        self.parts.append((self._name(), self.part_tokens))
        self.writer, self.part_tokens = None, 0

    def close(self) -> list[tuple[str, int]]:
        self._close_part()
        return self.parts


def _place(encoded: list[list[int]], val: list[bool], writers: dict) -> tuple[list[str], list[int], list[int]]:
    """Hands each split writer its documents; returns split, part and offset of each, in input order."""
    placed = {
        "train": iter(zip(*writers["train"].add([e for e, v in zip(encoded, val) if not v]))),
        "val": iter(zip(*writers["val"].add([e for e, v in zip(encoded, val) if v]))),
    }
    splits = ["val" if v else "train" for v in val]
    where = [next(placed[s]) for s in splits]
    return splits, [w[0] for w in where], [w[1] for w in where]


def _encode_batch(tok: Tokenizer, threads: int, batch: pa.RecordBatch) -> tuple[list[str], pa.Array, list[list[int]]]:
    text = batch.column("text")
    return batch.column("id").to_pylist(), text, tok.encode_batch(text.to_pylist(), num_threads=threads)


def _one_ahead(fn, items: Iterator) -> Iterator:
    """fn over items, the next result computed in a thread while the caller handles this one: SentencePiece
    releases the GIL, so the Python work on one batch overlaps the encoding of the next."""
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for item in items:
            upcoming = pool.submit(fn, item)
            if pending is not None:
                yield pending.result()
            pending = upcoming
        if pending is not None:
            yield pending.result()


def encode_shard(job: dict, progress=None) -> dict:
    """Encode one docs shard into token shards of both splits; returns their names, index rows, totals."""
    tok = Tokenizer(job["tokenizer"])
    writers = {s: _TokenWriter(Path(job["stage_dir"]) / s, f"shard_{job['shard']:05d}", np.dtype(job["dtype"]),
                               tok.eos_id) for s in SPLITS}
    rows: dict[str, list] = {"id": [], "split": [], "part": [], "offset": [], "length": []}
    totals = dict.fromkeys(TOTALS, 0)
    batches = pq.ParquetFile(job["docs"]).iter_batches(batch_size=ENCODE_DOCS, columns=["id", "text"])
    for ids, text, encoded in _one_ahead(partial(_encode_batch, tok, job["threads"]), batches):
        val = [is_val(i, job["val_fraction"]) for i in ids]
        lengths = [len(e) + 1 for e in encoded]  # before the writers append eos to the lists
        for key, values in zip(rows, (ids, *_place(encoded, val, writers), lengths)):
            rows[key] += values
        in_val = np.array(val, dtype=bool)
        for split, mask in (("train", ~in_val), ("val", in_val)):
            totals[f"docs_{split}"] += int(mask.sum())
            totals[f"bytes_{split}"] += pc.sum(pc.binary_length(text.filter(mask))).as_py() or 0
            totals[f"chars_{split}"] += pc.sum(pc.utf8_length(text.filter(mask))).as_py() or 0
        if progress:
            progress(len(ids))
    parts = {s: w.close() for s, w in writers.items()}
    for s in SPLITS:
        totals[f"tokens_{s}"] = sum(n for _, n in parts[s])
    return {"parts": parts, "rows": rows, "totals": totals}


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run_jobs(jobs: list[dict], workers: int, bar: tqdm) -> Iterator[dict]:
    """Results in job order whatever the worker count."""
    if workers <= 1:
        for job in jobs:
            yield encode_shard(job, progress=bar.update)
        return
    # fork is cheap and safe here (workers touch no torch state); elsewhere spawn.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as pool:
        for job, result in zip(jobs, pool.map(encode_shard, jobs)):
            bar.update(job["docs_count"])
            yield result


# --- the stage ----------------------------------------------------------------------------------


def training_texts(shards: list[Path], val_fraction: float) -> Iterator[str]:
    """Training-split texts, streamed by batch (bounded memory); validation never trains the vocabulary."""
    for path in shards:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=ENCODE_DOCS, columns=["id", "text"]):
            for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
                if not is_val(doc_id, val_fraction):
                    yield text


def _get_tokenizer(shards: list[Path], path: Path, cfg: TokenizeConfig, reuse: Path | None) -> Tokenizer:
    if reuse is None:
        return train_tokenizer(
            training_texts(shards, cfg.val_fraction), path, cfg.vocab_size, cfg.model_type, cfg.character_coverage,
            cfg.control_tokens, cfg.input_sentence_size, cfg.seed,
        )
    shutil.copyfile(reuse, path)
    tok = Tokenizer(path)
    missing = [t for t in cfg.control_tokens if tok.sp.piece_to_id(t) == tok.sp.unk_id()]
    if missing:
        log.warning("tokenize: reused tokenizer %s lacks control tokens %s", reuse, missing)
    if tok.dummy_prefix:
        log.warning("tokenize: reused tokenizer %s puts a dummy '\u2581' before each document; bits per byte "
                    "takes that byte off again", reuse)
    return tok


def _tokenize(in_manifest: Path, stage_dir: Path, cfg: TokenizeConfig, reuse: Path | None) -> tuple[dict, dict]:
    shards = read_manifest(in_manifest).output_list("docs")
    require_documents("tokenize", shards)
    tok = _get_tokenizer(shards, stage_dir / "tokenizer.model", cfg, reuse)
    jobs, workers = _jobs(shards, tok, stage_dir, cfg)
    outputs: dict[str, list[str]] = {s: [] for s in SPLITS}
    t = dict.fromkeys(TOTALS, 0)
    index_tmp = stage_dir / ".docs.parquet.tmp"
    with pq.ParquetWriter(index_tmp, INDEX_SCHEMA, compression="zstd") as index, \
            tqdm(total=sum(j["docs_count"] for j in jobs), desc="tokenize", unit="doc", mininterval=1.0) as bar:
        for result in _run_jobs(jobs, workers, bar):
            index.write_table(_index_table(result["rows"], {s: len(outputs[s]) for s in SPLITS}))
            for s in SPLITS:
                outputs[s] += [f"{s}/{name}" for name, _ in result["parts"][s]]
            t = {k: t[k] + result["totals"][k] for k in TOTALS}
    os.replace(index_tmp, stage_dir / "docs.parquet")
    if t["tokens_train"] == 0 or (cfg.val_fraction > 0 and t["tokens_val"] == 0):
        raise ValueError(f"tokenize: split left train={t['docs_train']} val={t['docs_val']} documents; "
                         f"the corpus is too small for val_fraction={cfg.val_fraction}")
    np.save(stage_dir / "token_bytes.npy", np.asarray(tok.token_bytes(), dtype=np.int32))
    stats = {
        "vocab_size": tok.vocab_size,
        **{k: t[k] for k in ("tokens_train", "tokens_val", "docs_train", "docs_val", "bytes_val", "chars_val")},
        "bytes_per_token": round((t["bytes_train"] + t["bytes_val"]) / max(1, t["tokens_train"] + t["tokens_val"]), 3),
        "shards_train": len(outputs["train"]), "shards_val": len(outputs["val"]), "workers": workers,
        "dummy_prefix": tok.dummy_prefix,
    }
    log.info("tokenize: vocab %d, %d train / %d val tokens", tok.vocab_size, t["tokens_train"], t["tokens_val"])
    return {"tokenizer": "tokenizer.model", "token_bytes": "token_bytes.npy", "index": "docs.parquet", **outputs}, stats


def _auto_workers(shards: list[Path]) -> int:
    # Starting a worker costs about 0.1 s (measured, fork, 2 cores): below a few seconds of encoding
    # each, SentencePiece's threads in this process are faster than more processes.
    on_disk = sum(p.stat().st_size for p in shards)
    return min(_cpus(), on_disk // AUTO_BYTES_PER_WORKER)


def _jobs(shards: list[Path], tok: Tokenizer, stage_dir: Path, cfg: TokenizeConfig) -> tuple[list[dict], int]:
    """One picklable task per docs shard, and how many processes to run them in."""
    workers = max(1, cfg.num_workers if cfg.num_workers is not None else _auto_workers(shards))
    workers = min(workers, max(1, len(shards)))
    dtype = "uint16" if tok.vocab_size <= 1 << 16 else "uint32"
    jobs = [{"shard": k, "docs": str(p), "docs_count": pq.ParquetFile(p).metadata.num_rows, "tokenizer": str(tok.path),
             "stage_dir": str(stage_dir), "dtype": dtype, "val_fraction": cfg.val_fraction,
             "threads": max(1, _cpus() // workers)} for k, p in enumerate(shards)]
    return jobs, workers


def _index_table(rows: dict[str, list], base: dict[str, int]) -> pa.Table:
    """Worker-local part numbers become positions in the manifest's shard list of the split."""
    shard = [base[s] + p for s, p in zip(rows["split"], rows["part"])]
    return pa.table({"id": rows["id"], "split": rows["split"], "shard": shard, "offset": rows["offset"],
                     "length": rows["length"]}, schema=INDEX_SCHEMA)
