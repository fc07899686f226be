"""Ingest: files, folders and globs of text/JSON/CSV/Parquet (optionally .gz/.zst) -> document shards.

    quill stage ingest --input data/sample --out data/runs/dev/ingest

Reads stream line by line (bounded memory for large files). Every record becomes either a
document with a deterministic id (`<source>:<position>`) or a quarantined row in `excluded/`
naming the file and line. Folder walks skip hidden files and README files (a corpus folder's
documentation is not corpus) and refuse links that lead outside the folder.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import logging
from pathlib import Path
from typing import IO, Any, Iterator

import pyarrow.parquet as pq

from pipeline.config import IngestConfig
from pipeline.docs import Sieve
from pipeline.manifest import Manifest, input_refs, run_stage

log = logging.getLogger(__name__)

TEXT_EXT = {".txt", ".md"}
RECORD_EXT = {".jsonl", ".json", ".csv", ".parquet"}
COMPRESSED = {".gz", ".zst"}


class IngestError(ValueError):
    """Bad input that stops the stage (nothing usable, unsupported source)."""


def _kind(path: Path) -> str | None:
    suffixes = path.suffixes[-2:]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    ext = suffixes[-1].lower() if suffixes else ""
    return ext if ext in TEXT_EXT | RECORD_EXT else None


def expand_sources(sources: list[str]) -> list[tuple[Path, str]]:
    """(file, label) pairs, sorted and de-duplicated; the label is the path shown in ids and reports."""
    found: dict[Path, str] = {}
    for src in sources:
        if "://" in src:
            raise IngestError(f"{src}: URL sources are not supported yet; download the file and pass its path")
        if any(ch in src for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(src, recursive=True))
            if not matches:
                raise IngestError(f"{src}: the pattern matches no file")
            for p in matches:
                if p.is_file() and _kind(p):
                    found.setdefault(p.resolve(), str(p))
            continue
        path = Path(src)
        if path.is_file():
            if not _kind(path):
                raise IngestError(f"{src}: unsupported file type (use {sorted(TEXT_EXT | RECORD_EXT)}, optionally .gz/.zst)")
            found.setdefault(path.resolve(), path.name)
        elif path.is_dir():
            root = path.resolve()
            for p in sorted(path.rglob("*")):
                rel = p.relative_to(path)
                if any(part.startswith(".") for part in rel.parts) or p.name.lower().startswith("readme"):
                    continue
                if not p.is_file() or not _kind(p):
                    continue
                if not p.resolve().is_relative_to(root):
                    raise IngestError(f"{p}: link points outside the source folder {root}; refused")
                found.setdefault(p.resolve(), f"{path.name}/{rel.as_posix()}")
        else:
            raise IngestError(f"{src}: no such file or folder")
    return sorted(found.items(), key=lambda kv: kv[1])


def _open_binary(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


class _Decoder:
    """Decodes lines strictly, falling back to U+FFFD replacement and counting the bad lines."""

    def __init__(self) -> None:
        self.bad_lines = 0

    def __call__(self, raw: bytes) -> tuple[str, bool]:
        try:
            return raw.decode("utf-8"), False
        except UnicodeDecodeError:
            self.bad_lines += 1
            return raw.decode("utf-8", errors="replace"), True


Record = tuple[int, str | None, dict[str, Any], str]  # (position, text or None, meta, error reason)


def _text_docs(lines: Iterator[tuple[int, str, bool]], cfg: IngestConfig, mode: str) -> Iterator[Record]:
    buf: list[str] = []
    start, bad = 1, False

    def emit() -> Iterator[Record]:
        text = "\n".join(buf).strip("\n")
        yield start, text, {"line": start}, "invalid_utf8" if bad else ""

    seps = set(cfg.separators)
    for lineno, line, line_bad in lines:
        line = line.rstrip("\r\n")
        if mode == "line":
            buf, start, bad = [line], lineno, line_bad
            yield from emit()
            buf = []
            continue
        boundary = (mode == "separator" and line.strip() in seps) or (mode == "paragraph" and not line.strip())
        if boundary:
            if buf:
                yield from emit()
            buf, start, bad = [], lineno + 1, False
            continue
        if not buf:
            start = lineno
        buf.append(line)
        bad = bad or line_bad
    if buf:
        yield from emit()


def _split_mode(path: Path, cfg: IngestConfig) -> str:
    if cfg.split != "auto":
        return cfg.split
    seps = set(cfg.separators)
    with _open_binary(path) as fh:
        for raw in fh:
            if raw.decode("utf-8", errors="replace").strip() in seps:
                return "separator"
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


def read_source(path: Path, label: str, cfg: IngestConfig, decoder: _Decoder) -> Iterator[Record]:
    kind = _kind(path)
    with _open_binary(path) as fh:
        head = fh.read(8192)
    if b"\x00" in head and kind != ".parquet":
        yield 0, None, {}, f"binary_file: {label} contains NUL bytes"
        return
    if kind == ".parquet":
        pf = pq.ParquetFile(path)
        if cfg.text_field not in pf.schema_arrow.names:
            raise IngestError(f"{label}: no column {cfg.text_field!r} (columns: {pf.schema_arrow.names})")
        pos = 0
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                pos += 1
                yield _record(pos, rec, cfg, f"{label} row {pos}")
        return
    if kind == ".json":
        with _open_binary(path) as fh:
            try:
                data = json.loads(decoder(fh.read())[0])
            except json.JSONDecodeError as exc:
                yield 0, None, {}, f"malformed_json: {label}:{exc.lineno}: {exc.msg}"
                return
        records = data if isinstance(data, list) else next((v for v in data.values() if isinstance(v, list)), [data])
        for pos, rec in enumerate(records, 1):
            yield _record(pos, rec, cfg, f"{label} record {pos}")
        return
    with _open_binary(path) as fh:
        lines = ((n, *decoder(raw)) for n, raw in enumerate(fh, 1))
        if kind == ".jsonl":
            for n, line, _bad in lines:
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line.rstrip("\r\n"))
                except json.JSONDecodeError as exc:
                    yield n, None, {}, f"malformed_json: {label}:{n}: {exc.msg}"
                    continue
                yield _record(n, rec, cfg, f"{label}:{n}")
        elif kind == ".csv":
            reader = csv.DictReader(line for _n, line, _b in lines)
            for pos, rec in enumerate(reader, 1):
                yield _record(pos, rec, cfg, f"{label} row {pos}")
        else:
            yield from _text_docs(lines, cfg, _split_mode(path, cfg))


def ingest(sources: list[str], out_dir: Path, cfg: IngestConfig, force: bool = False) -> Manifest:
    files = expand_sources(sources)
    if not files:
        raise IngestError(f"no readable files in {sources}")
    inputs = input_refs([p for p, _ in files])
    return run_stage("ingest", out_dir, inputs, cfg, lambda tmp: _ingest(files, tmp, cfg), force=force)


def _ingest(files: list[tuple[Path, str]], stage_dir: Path, cfg: IngestConfig) -> tuple[dict, dict]:
    sieve, decoder = Sieve(stage_dir, cfg.shard_docs), _Decoder()
    for path, label in files:
        for pos, text, meta, error in read_source(path, label, cfg, decoder):
            doc = {"id": f"{label}:{pos}", "text": text or "", "source": label, "meta": meta}
            reason, _, detail = error.partition(": ")
            if not reason and not (text or "").strip():
                reason, detail = "empty", f"{label}:{pos}"
            if reason == "invalid_utf8" and cfg.encoding_errors == "replace":
                reason = ""
            if reason:
                sieve.drop(doc, reason, detail)
            else:
                sieve.keep(doc)
    if sieve.kept.count == 0:
        raise IngestError(f"empty corpus: no documents in {[label for _, label in files]} (dropped: {sieve.dropped})")
    outputs, stats = sieve.close("ingest", {"files": len(files), "invalid_utf8_lines": decoder.bad_lines})
    log.info("ingest: %d files, %d docs kept, dropped %s", len(files), stats["docs_kept"], stats["dropped"])
    return outputs, stats
