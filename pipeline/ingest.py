"""Ingest: files, folders, globs, archives, URLs and Hugging Face datasets -> document shards.

    quill stage ingest --input data/sample https://example.org/poems.txt.gz#sha256=<hex> --out data/runs/dev/ingest

Text (.txt, .md), JSON/JSONL, CSV and Parquet files, each optionally .gz or .zst; archives (.tar,
.tar.gz, .tgz, .tar.zst, .zip) and http(s) URLs go through `pipeline.io.sources` (cache, pins, caps,
refusal of escaping members), `hf:<name or folder>[:split]` reads a Hugging Face dataset.

A text file's documents are works (`split=work`, what `auto` picks without a separator line): a story,
a chapter or a poem, so that the filters judge whole works and the model sees an end-of-text token only
where a work ends (`_work_docs`). Paragraph and line splitting remain options.

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
import re
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


# --- works: stories, chapters, poems ---------------------------------------------------------------

# A heading that opens a chapter, story or poem: a keyword and a number ("CHAPTER I.", "Chapter 12", "ADVENTURE
# IV. ..."), or a roman or arabic numeral alone or before a title ("II.", "  XII", "VII. THE BLUE CARBUNCLE").
_HEADING = re.compile(r"(?i:chapter|book|part|adventure|stave|canto|volume|letter|act|scene)\s+(?:[IVXLCDM]+|\d+)\b"
                      r"|(?:[IVXLCDM]+|\d{1,3})\.?$|(?:[IVXLCDM]+|\d{1,3})\.\s+\S")
_HEADING_CHARS = 70  # a heading line is short; a longer line is a line of text
_MIN_BODY_CHARS = 100  # a heading starts a new work only after this much text: a title page stays with chapter 1
_UNWRAPPED_CHARS = 120  # lines this long are unwrapped paragraphs (books hard-wrap at ~70)
# A story whose paragraphs follow each other without blank lines ends at a single line break only this far on.
_STORY_CHARS = 1000
_PG_START = re.compile(r"\*{3} ?start of (?:this|the) project gutenberg", re.I)
_PG_END = re.compile(r"\*{3} ?end of (?:this|the) project gutenberg", re.I)
_TERMINAL = ('.', '!', '?', '"', "'", "”", "’", ")", "…")


def _is_heading(block: list[str], blanks_before: int) -> bool:
    """A block of one or two short lines opening a work: a numbered heading, or (after two blank lines, the
    way books set titles apart) a line without lower-case letters such as "THE GOLDEN BIRD"."""
    first = block[0].strip()
    if len(block) > 2 or any(len(line.strip()) > _HEADING_CHARS for line in block):
        return False
    if _HEADING.match(first):
        return True
    return blanks_before >= 2 and first.upper() == first and sum(c.isalpha() for c in first) >= 2


def _story_break(before: str, line: str) -> bool:
    """In a file of unwrapped paragraph lines (one story per run of lines, TinyStories), whether a single line
    break between two lines ends a story: the first ends a sentence, the second starts one, and one of them is
    a paragraph rather than a short line of dialogue or verse (those may follow each other inside a story)."""
    before, line = before.rstrip(), line.lstrip()
    return (before.endswith(_TERMINAL) and (line[:1].isupper() or line[:1] in "\"'“‘")
            and max(len(before), len(line)) >= _UNWRAPPED_CHARS - 20)


def _work_docs(lines: Iterator[Line], unwrapped: bool, window: int, cap: int, label: str) -> Iterator[Record]:
    """Documents that are works: a new one starts at a heading once the current one holds some text, at a
    story break in an unwrapped file, and where a window of whole paragraphs would pass `window` characters.
    A Project Gutenberg header (up to its START line) and licence (from its END line on) are documents of
    their own, which clean cuts to nothing."""
    doc: _Doc | None = None
    body, blanks, trailer, previous, broken = 0, 0, False, "", False  # broken: the story has a blank line
    block: list[tuple[int, str, bool, bool]] = []

    def flush() -> Iterator[Record]:
        nonlocal doc, body
        if doc is not None and doc.lines:
            yield doc.record(label)
        doc, body = None, 0

    def add(rows: list[tuple[int, str, bool, bool]], gap: int) -> None:
        nonlocal doc
        if doc is None:
            doc = _Doc(rows[0][0], cap)
        elif gap:
            for _ in range(gap):
                doc.add("", False, False)
        for _n, text, bad, truncated in rows:
            doc.add(text, bad, truncated)

    def place(rows: list[tuple[int, str, bool, bool]], gap: int) -> Iterator[Record]:
        nonlocal body, trailer
        texts = [r[1] for r in rows]
        if not trailer and any(_PG_END.match(t.strip()) for t in texts):
            yield from flush()
            trailer = True
        if trailer:
            add(rows, gap)
            return
        start = next((k for k, t in enumerate(texts) if _PG_START.match(t.strip())), None)
        if start is not None:  # the header ends with its START line
            add(rows[: start + 1], gap)
            yield from flush()
            if start + 1 < len(rows):
                yield from place(rows[start + 1 :], 0)
            return
        size = sum(map(len, texts))
        heading = _is_heading(texts, gap)
        # characters with the line breaks: the document's, the blank lines before the block, the block's
        longer = doc is not None and doc.size + len(doc.lines) + gap + size + len(rows) > window
        if (heading and body >= _MIN_BODY_CHARS) or (body and longer) or (doc is not None and doc.big):
            yield from flush()
        add(rows, gap if doc is not None else 0)
        if not heading:
            body += size

    for row in lines:
        lineno, text, bad, truncated = row
        text = text.rstrip("\r\n")
        if not text.strip():
            if block:
                yield from place(block, blanks)
                block, blanks = [], 0
                broken = doc is not None
            blanks += 1
        else:
            if unwrapped and block and not trailer and _story_break(previous, text) and (
                    broken or (doc.size if doc is not None else 0) + sum(len(r[1]) for r in block) >= _STORY_CHARS):
                yield from place(block, blanks)
                yield from flush()
                block, blanks, broken = [], 0, False
            block.append((lineno, text, bad, truncated))
        previous = text
    if block:
        yield from place(block, blanks)
    yield from flush()


def _split_mode(path: Path, cfg: IngestConfig) -> tuple[str, bool]:
    """(split mode, whether the file holds unwrapped paragraph lines) for a text file."""
    if cfg.split not in ("auto", "work"):
        return cfg.split, False
    seps, scanned, lines, long = {s.encode() for s in cfg.separators}, 0, 0, 0
    with open_binary(path) as fh:
        for _n, raw, _t in _read_lines(fh, MB):
            if cfg.split == "auto" and raw.strip() in seps:
                return "separator", False
            if raw.strip():
                lines += 1
                long += len(raw) >= _UNWRAPPED_CHARS
            scanned += len(raw)
            if scanned > AUTO_SCAN_BYTES:
                break
    return "work", lines > 0 and long >= 0.2 * lines


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
            mode, unwrapped = _split_mode(path, cfg)
            if mode == "work":
                yield from _work_docs(lines, unwrapped, cfg.work_max_chars, cap, label)
            else:
                yield from _text_docs(lines, mode, set(cfg.separators), cap, label)


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
