"""Ingest: files, folders, globs, archives, URLs and Hugging Face datasets -> document shards.

    quill stage ingest --input data/sample https://example.org/poems.txt.gz#sha256=<hex> --out data/runs/dev/ingest

Text (.txt, .md), JSON/JSONL, CSV and Parquet files, each optionally .gz or .zst; archives (.tar,
.tar.gz, .tgz, .tar.zst, .zip) and http(s) URLs go through `pipeline.io.sources` (cache, pins, caps,
refusal of escaping members), `hf:<name or folder>[:split]` reads a Hugging Face dataset.

Reads stream line by line with a bounded line length, so memory stays flat on any corpus size.
Every record becomes either a document with a deterministic id (`<source>:<position>`) or a
quarantined row in `excluded/` naming the file and line. Folder walks skip hidden files and README
files (a corpus folder's documentation is not corpus), count files of other types in
`files_skipped`, and refuse links that lead outside the folder.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow.parquet as pq

from pipeline.config import IngestConfig
from pipeline.io.progress import Progress
from pipeline.io.sources import IngestError, Source, expand_sources, hf_rows, kind_of, open_binary
from pipeline.manifest import Manifest, run_stage
from pipeline.sieve import Sieve, finish

__all__ = ["IngestError", "Source", "expand_sources", "ingest", "read_source"]
log = logging.getLogger(__name__)

MB = 1 << 20
AUTO_SCAN_BYTES = 16 * MB  # split=auto looks for a separator line this far into a file


# --- reading -----------------------------------------------------------------------------------


def _read_lines(fh: IO[bytes], cap: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, truncated): a line longer than `cap` is cut there and the rest skipped unread."""
    n = 0
    while raw := fh.readline(cap + 1):
        n += 1
        if len(raw) > cap and not raw.endswith(b"\n"):
            while (rest := fh.readline(MB)) and not rest.endswith(b"\n"):
                pass
            yield n, raw[:cap], True
        else:
            yield n, raw, False


class _Decoder:
    """Decodes strictly, falling back to U+FFFD replacement and counting the bad lines."""

    def __init__(self) -> None:
        self.bad_lines = 0

    def __call__(self, raw: bytes) -> tuple[str, bool]:
        try:
            return raw.decode("utf-8"), False
        except UnicodeDecodeError:
            self.bad_lines += 1
            return raw.decode("utf-8", errors="replace"), True


Record = tuple[int, str | None, dict[str, Any], str]  # (position, text or None, meta, "reason: detail" or "")
Line = tuple[int, str, bool, bool]  # (line number, text, had invalid UTF-8, truncated)


class _Doc:
    """The lines of the document being read; past `cap` characters it stops growing and is flagged."""

    def __init__(self, start: int, cap: int):
        self.start, self.cap, self.lines, self.size, self.bad, self.big = start, cap, [], 0, False, False

    def add(self, line: str, bad: bool, truncated: bool) -> None:
        self.bad = self.bad or bad
        if truncated or self.size + len(line) > self.cap:
            if not self.lines:
                self.lines.append(line[: self.cap])  # a head of the document for its quarantine row
            self.big = True
        elif not self.big:
            self.lines.append(line)
            self.size += len(line)

    def record(self, label: str) -> Record:
        where = f"{label}:{self.start}"
        if self.big:
            reason = f"too_large: {where}: over {self.cap // MB} MB"
            return self.start, "\n".join(self.lines), {"line": self.start}, reason
        reason = f"invalid_utf8: {where}" if self.bad else ""
        return self.start, "\n".join(self.lines).strip("\n"), {"line": self.start}, reason


def _text_docs(lines: Iterator[Line], mode: str, seps: set[str], cap: int, label: str) -> Iterator[Record]:
    """Group lines into documents by split `mode` (file, paragraph, separator or line)."""
    doc = _Doc(1, cap)
    for lineno, line, bad, truncated in lines:
        line = line.rstrip("\r\n")
        if mode == "line":
            one = _Doc(lineno, cap)
            one.add(line, bad, truncated)
            yield one.record(label)
            continue
        if (mode == "separator" and line.strip() in seps) or (mode == "paragraph" and not line.strip()):
            if doc.lines:
                yield doc.record(label)
            doc = _Doc(lineno + 1, cap)
            continue
        if not doc.lines:
            doc.start = lineno
        doc.add(line, bad, truncated)
    if doc.lines:
        yield doc.record(label)


def _split_mode(path: Path, cfg: IngestConfig) -> str:
    if cfg.split != "auto":
        return cfg.split
    seps, scanned = {s.encode() for s in cfg.separators}, 0
    with open_binary(path) as fh:
        for _n, raw, _t in _read_lines(fh, MB):
            if raw.strip() in seps:
                return "separator"
            scanned += len(raw)
            if scanned > AUTO_SCAN_BYTES:
                break
    return "paragraph"


def _field(record: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(record, dict) or part not in record:
            return None
        record = record[part]
    if isinstance(record, list) and all(isinstance(x, str) for x in record):
        return "\n".join(record)  # e.g. poems stored as a list of lines
    return record


def _record(pos: int, rec: Any, cfg: IngestConfig, where: str) -> Record:
    text = _field(rec, cfg.text_field)
    if not isinstance(text, str):
        return pos, None, {}, f"missing_text_field: {where} has no string field {cfg.text_field!r}"
    meta = {k: v for k, v in rec.items() if k != cfg.text_field.split(".")[0]} if isinstance(rec, dict) else {}
    return pos, text, meta, ""


def _holds_json_lines(path: Path, cap: int) -> bool:
    """A .json file whose first line is a whole JSON object and which has more lines (C4 ships these)."""
    with open_binary(path) as fh:
        lines = _read_lines(fh, cap)
        first = next(lines, (0, b"", True))
        try:
            if first[2] or not isinstance(json.loads(first[1]), dict):
                return False
        except ValueError:
            return False
        return any(raw.strip() for _n, raw, _t in lines)


def _json_records(path: Path, label: str, cfg: IngestConfig, decoder: _Decoder) -> Iterator[Record]:
    cap = int(cfg.max_doc_mb * MB)
    with open_binary(path) as fh:
        raw = fh.read(cap + 1)
    if len(raw) > cap:  # a .json file is parsed whole, so it is held to one document's size
        yield 0, None, {}, f"too_large: {label}: a .json file over {cfg.max_doc_mb:g} MB; convert it to JSONL"
        return
    try:
        data = json.loads(decoder(raw)[0])
    except json.JSONDecodeError as exc:
        yield 0, None, {}, f"malformed_json: {label}:{exc.lineno}: {exc.msg}"
        return
    records = data if isinstance(data, list) else next((v for v in data.values() if isinstance(v, list)), [data])
    for pos, rec in enumerate(records, 1):
        yield _record(pos, rec, cfg, f"{label} record {pos}")


def _parquet_records(path: Path, label: str, cfg: IngestConfig) -> Iterator[Record]:
    pf = pq.ParquetFile(path)
    if cfg.text_field.split(".")[0] not in pf.schema_arrow.names:
        raise IngestError(f"{label}: no column {cfg.text_field!r} (columns: {pf.schema_arrow.names})")
    pos = 0
    for batch in pf.iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            pos += 1
            yield _record(pos, rec, cfg, f"{label} row {pos}")


def _jsonl_records(lines: Iterator[Line], label: str, cfg: IngestConfig) -> Iterator[Record]:
    for n, line, bad, truncated in lines:
        if truncated:
            yield n, None, {}, f"too_large: {label}:{n}: line over {cfg.max_doc_mb:g} MB"
        elif line.strip():
            try:
                rec = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                yield n, None, {}, f"malformed_json: {label}:{n}: {exc.msg}"
                continue
            pos, text, meta, error = _record(n, rec, cfg, f"{label}:{n}")
            yield pos, text, meta, error or (f"invalid_utf8: {label}:{n}" if bad else "")


def read_source(src: Source, cfg: IngestConfig, decoder: _Decoder) -> Iterator[Record]:
    """The records of one source, in order; errors come back as records with a reason."""
    label, path = src.label, src.path
    if src.hf:
        for pos, rec in enumerate(hf_rows(src.hf), 1):
            yield _record(pos, rec, cfg, f"{label} row {pos}")
        return
    kind = kind_of(path)
    if kind == ".parquet":
        yield from _parquet_records(path, label, cfg)
        return
    with open_binary(path) as fh:
        if b"\x00" in fh.read(8192):
            yield 0, None, {}, f"binary_file: {label} contains NUL bytes"
            return
    cap = int(cfg.max_doc_mb * MB)
    if kind == ".json" and not _holds_json_lines(path, cap):
        yield from _json_records(path, label, cfg, decoder)
        return
    with open_binary(path) as fh:
        lines = ((n, *decoder(raw), t) for n, raw, t in _read_lines(fh, cap))
        if kind in (".jsonl", ".json"):
            yield from _jsonl_records(lines, label, cfg)
        elif kind == ".csv":
            reader = csv.DictReader(line for _n, line, _b, _t in lines)
            for pos, rec in enumerate(reader, 1):
                yield _record(pos, rec, cfg, f"{label} row {pos}")
        else:
            yield from _text_docs(lines, _split_mode(path, cfg), set(cfg.separators), cap, label)


# --- the stage ---------------------------------------------------------------------------------


def ingest(sources: list[str], out_dir: Path, cfg: IngestConfig, force: bool = False) -> Manifest:
    found, refs, skipped = expand_sources(sources, cfg)
    if not found:
        raise IngestError(f"no readable files in {sources} (skipped: {skipped or 'none'})")
    return run_stage("ingest", out_dir, refs, cfg, lambda tmp: _ingest(found, tmp, cfg, skipped), force=force)


def _route(sieve: Sieve, src: Source, record: Record, cfg: IngestConfig) -> None:
    pos, text, meta, error = record
    doc = {"id": f"{src.label}:{pos}", "text": text or "", "source": src.label, "meta": meta}
    reason, _, detail = error.partition(": ")
    if not reason and not (text or "").strip():
        reason, detail = "empty", f"{src.label}:{pos}"
    if reason == "invalid_utf8" and cfg.encoding_errors == "replace":
        reason = ""
    if reason:
        sieve.drop(doc, reason, detail)
    else:
        sieve.keep(doc)


def _ingest(found: list[Source], stage_dir: Path, cfg: IngestConfig, skipped: dict[str, int]) -> tuple[dict, dict]:
    sieve, decoder = Sieve(stage_dir, shard_rows=cfg.shard_docs, shard_bytes=int(cfg.shard_mb * MB)), _Decoder()
    with Progress("ingest") as bar:  # no total: compressed and remote sources have no text size up front
        for src in found:
            for record in read_source(src, cfg, decoder):
                _route(sieve, src, record, cfg)
                bar.update(1, len(record[1] or ""))  # characters: bytes for ASCII text, close enough for a rate
    tally = sieve.close()
    if tally.kept == 0:
        raise IngestError(f"empty corpus: no documents in {[s.label for s in found]} (dropped: {tally.dropped})")
    extra = {"files": len(found), "invalid_utf8_lines": decoder.bad_lines, "files_skipped": skipped}
    outputs, stats = finish(stage_dir, "ingest", tally, extra)
    log.info("ingest: %d sources, %d docs kept, dropped %s", len(found), stats["docs_kept"], stats["dropped"])
    return outputs, stats
