"""Where documents come from: source specs expanded into files, with URLs, archives and HF datasets.

    expand_sources(["data/sample", "corpus.tar.gz", "https://example.org/p.txt.gz#sha256=<hex>",
                    "hf:data/my_dataset:train"], cfg) -> (sources, input refs, skipped files)

Files, folders and globs of .txt/.md/.jsonl/.json/.csv/.parquet (optionally .gz/.zst). Downloads
stream into `<cache_dir>/<sha256(url)[:16]>/<file name>` through a temporary name, renamed only when
complete, within the size cap and matching the pinned sha256 (if any); a cached file is reused,
re-checked against its pin. Archives unpack once per content hash into
`<cache_dir>/archives/<sha256[:16]>/`; a member with an absolute path, a `..` part, a link or a
device file stops the stage: a corpus archive has no reason to hold one. Hugging Face sources need
the optional `datasets` package: a folder written by `save_to_disk` is memory-mapped, any other
name or folder (local JSON/Parquet files, a Hub dataset) is streamed.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import logging
import os
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any, NamedTuple
from urllib.parse import unquote, urlsplit

from pipeline.config import IngestConfig
from pipeline.manifest import InputRef, sha256_file

log = logging.getLogger(__name__)
MB = 1 << 20
TEXT_EXT = {".txt", ".md"}
RECORD_EXT = {".jsonl", ".json", ".csv", ".parquet"}
COMPRESSED = {".gz", ".zst"}
ARCHIVE_EXT = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".zip")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class IngestError(ValueError):
    """Bad input that stops the ingest stage (nothing usable, unsafe or unsupported source); retrying will not help."""


# --- URLs --------------------------------------------------------------------------------------


def is_url(src: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*://", src, re.I) is not None


def url_label(url: str) -> str:
    """host/path of a URL (no scheme, query or fragment): the label its documents' ids start with."""
    parts = urlsplit(url.partition("#")[0])
    return f"{parts.netloc}{parts.path}".rstrip("/")


def _pinned_sha(url: str, cfg: IngestConfig) -> str | None:
    base, _, fragment = url.partition("#")
    pin = fragment[len("sha256="):] if fragment.startswith("sha256=") else cfg.url_sha256.get(base)
    if pin is not None and not _SHA.match(pin.lower()):
        raise IngestError(f"{url}: sha256 pin {pin!r} is not 64 hex digits")
    return pin.lower() if pin else None


def _file_name(url: str) -> str:
    """The URL's last path segment as a safe file name (keeps the extension that tells the format)."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return name if name.strip(".") else "download"


def fetch_url(url: str, cfg: IngestConfig) -> Path:
    """The URL's content as a cached local file, downloaded if needed; see the module docstring."""
    base = url.partition("#")[0]
    if urlsplit(base).scheme.lower() not in ("http", "https"):
        raise IngestError(f"{url}: only http(s) URLs are supported")
    pin = _pinned_sha(url, cfg)
    folder = Path(cfg.cache_dir) / hashlib.sha256(base.encode()).hexdigest()[:16]
    target = folder / _file_name(base)
    if target.is_file() and (pin is None or sha256_file(target) == pin):
        log.info("ingest: %s from the cache (%s)", base, target)
        return target
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{target.name}.part{os.getpid()}"
    try:
        digest = _download(base, tmp, cfg)
        if pin is not None and digest != pin:
            raise IngestError(f"{base}: sha256 mismatch: expected {pin}, got {digest}; download discarded")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _download(url: str, dest: Path, cfg: IngestConfig) -> str:
    """Stream `url` into `dest` within the size cap; returns the sha256 of what was written."""
    cap = int(cfg.max_download_mb * MB)
    request = urllib.request.Request(url, headers={"User-Agent": "quill-ingest"})
    try:
        response = urllib.request.urlopen(request, timeout=cfg.download_timeout_s)
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500 and exc.code not in (408, 429):  # the URL is wrong: retrying cannot help
            raise IngestError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        raise OSError(f"{url}: HTTP {exc.code} {exc.reason}") from exc  # OSError: the flow's retries apply
    except (urllib.error.URLError, TimeoutError) as exc:  # no answer: unknown host, refused, timed out
        reason = getattr(exc, "reason", exc)
        raise OSError(f"{url}: cannot download: {reason}; check the URL and the network") from exc
    h, size = hashlib.sha256(), 0
    with response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > cap:
            raise IngestError(f"{url}: {int(length):,} bytes is over the {cfg.max_download_mb:g} MB cap "
                              "(max_download_mb)")
        while block := response.read(MB):
            size += len(block)
            if size > cap:
                raise IngestError(f"{url}: more than the {cfg.max_download_mb:g} MB cap (max_download_mb); "
                                  "download stopped")
            h.update(block)
            out.write(block)
    log.info("ingest: downloaded %s (%d bytes)", url, size)
    return h.hexdigest()


# --- archives ----------------------------------------------------------------------------------


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_EXT)


def _member_path(archive: Path, name: str, root: Path) -> Path:
    """Where a member goes under `root`; refuses names that would land anywhere else."""
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or re.match(r"^[A-Za-z]:", name):
        raise IngestError(f"{archive.name}: member {name!r} would escape the archive folder; refused")
    target = root / rel
    if not target.resolve().is_relative_to(root.resolve()):
        raise IngestError(f"{archive.name}: member {name!r} would escape the archive folder; refused")
    return target


def open_binary(path: Path) -> IO[bytes]:
    """A binary reader of the file's content, decompressing .gz/.tgz and .zst as it streams."""
    name = path.name.lower()
    if name.endswith((".gz", ".tgz")):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _members(archive: Path) -> Iterator[tuple[str, str, IO[bytes] | None]]:
    """(name, kind, reader) for each member, streamed: kind is 'file', 'dir', 'link' or 'special'."""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                kind = "dir" if info.is_dir() else "link" if stat.S_ISLNK(mode) else "file"
                with zf.open(info) if kind == "file" else io.BytesIO() as fh:
                    yield info.filename, kind, fh
        return
    with open_binary(archive) as raw, tarfile.open(fileobj=raw, mode="r|") as tf:
        for m in tf:
            kind = "file" if m.isfile() else "dir" if m.isdir() else "link" if m.issym() or m.islnk() else "special"
            yield m.name, kind, tf.extractfile(m) if kind == "file" else None


def unpack_archive(archive: Path, cfg: IngestConfig) -> Path:
    """The archive's members unpacked (once per content hash) into a cache folder; returns the folder."""
    root = Path(cfg.cache_dir) / "archives" / sha256_file(archive)[:16]
    if root.is_dir():
        return root
    partial = root.with_name(f"{root.name}.partial{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    cap, total = int(cfg.max_extract_mb * MB), 0
    try:
        for name, kind, fh in _members(archive):
            target = _member_path(archive, name, partial)
            if kind in ("link", "special"):
                raise IngestError(f"{archive.name}: member {name!r} is a {kind}; "
                                  "archives may hold only files and folders")
            if kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                while block := fh.read(MB):
                    total += len(block)
                    if total > cap:
                        raise IngestError(f"{archive.name}: unpacks to more than {cfg.max_extract_mb:g} MB "
                                          "(max_extract_mb)")
                    out.write(block)
        os.replace(partial, root)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root


# --- Hugging Face datasets ---------------------------------------------------------------------


def is_hf(src: str) -> bool:
    return src.startswith("hf:")


def parse_hf(src: str) -> tuple[str, str | None]:
    """'hf:name[:split]' -> (name, split); a split name never holds '/', so 'hf:C:/x' stays a path."""
    rest = src[3:]
    name, sep, split = rest.rpartition(":")
    if sep and name and split and "/" not in split and "\\" not in split:
        return name, split
    return rest, None


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json", "dataset_info.json"))


def hf_label(src: str) -> str:
    name, split = parse_hf(src)
    return f"{Path(name).name if Path(name).exists() else name}/{split or 'train'}"


def hf_files(src: str) -> list[Path]:
    """The local files behind an hf: source (for the manifest's input hashes); [] for a Hub name."""
    path = Path(parse_hf(src)[0])
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")) if path.is_dir() else []


def hf_rows(src: str) -> Iterator[dict[str, Any]]:
    """Rows of an hf: source, streamed; a DatasetDict without an explicit split reads 'train' (or its only split)."""
    try:
        import datasets
    except ImportError as exc:
        raise IngestError(f"{src}: Hugging Face sources need the optional extra: pip install 'quill[hf]'") from exc
    name, split = parse_hf(src)
    if _is_saved_dataset(Path(name)):
        ds = datasets.load_from_disk(name)
        if isinstance(ds, datasets.DatasetDict):
            chosen = split or ("train" if "train" in ds or len(ds) != 1 else next(iter(ds)))
            if chosen not in ds:
                raise IngestError(f"{src}: no split {chosen!r} (splits: {sorted(ds)})")
            ds = ds[chosen]
        for batch in ds.iter(batch_size=1024):
            yield from (dict(zip(batch, values)) for values in zip(*batch.values()))
        return
    try:
        stream = datasets.load_dataset(name, split=split or "train", streaming=True)
    except (FileNotFoundError, ValueError) as exc:
        raise IngestError(f"{src}: cannot load this dataset: {exc}") from exc
    yield from stream


# --- expansion ---------------------------------------------------------------------------------


class Source(NamedTuple):
    label: str  # what document ids start with: a path relative to what was given, a URL's host/path
    path: Path | None = None  # a local file (downloaded and unpacked ones included)
    hf: str | None = None  # or an hf: spec


def kind_of(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    return ext if ext in TEXT_EXT | RECORD_EXT else None


class _Expansion:
    """Collects sources (de-duplicated by resolved path), the input refs and skipped files."""

    def __init__(self, cfg: IngestConfig):
        self.cfg, self.sources, self.refs, self.skipped = cfg, {}, {}, Counter()
        self.seen: set[Path] = set()

    def ref(self, path: Path, name: str | None = None) -> None:
        key = name or str(path.resolve())
        if key not in self.refs:
            self.refs[key] = InputRef(path=key, sha256=sha256_file(path))

    def file(self, path: Path, label: str, unpack: bool = True) -> bool:
        """Add one file (an archive adds its members); False when its type is not supported."""
        if unpack and is_archive(path):
            self.folder(unpack_archive(path, self.cfg), label, unpack=False)  # archives in archives are not opened
            return True
        if not kind_of(path):
            return False
        if path.resolve() not in self.seen:
            self.seen.add(path.resolve())
            self.add(Source(label, path))
        return True

    def add(self, src: Source) -> None:
        if src.label in self.sources:  # ids are '<label>:<position>': a shared label would repeat them
            first = self.sources[src.label]
            raise IngestError(f"two sources are both labelled {src.label!r} ({first.path or first.hf} and "
                              f"{src.path or src.hf}); give them distinct names")
        self.sources[src.label] = src

    def folder(self, folder: Path, prefix: str, unpack: bool = True, ref: bool = False) -> None:
        root = folder.resolve()
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder)
            hidden = any(part.startswith(".") for part in rel.parts)
            if hidden or p.name.lower().startswith("readme") or not p.is_file():
                continue
            if not p.resolve().is_relative_to(root):
                raise IngestError(f"{p}: link points outside the source folder {root}; refused")
            if self.file(p, f"{prefix}/{rel.as_posix()}", unpack):
                if ref:
                    self.ref(p)
            else:
                self.skipped[p.suffix.lower() or "(no extension)"] += 1


def _add_spec(ex: _Expansion, spec: str) -> None:
    unsupported = (f"{spec}: unsupported file type (use {sorted(TEXT_EXT | RECORD_EXT)}, optionally .gz/.zst, "
                   "or an archive)")
    if is_hf(spec):
        ex.add(Source(hf_label(spec), hf=spec))
        for p in (files := hf_files(spec)):
            ex.ref(p)
        if not files:  # a Hub name: the spec itself stands for the input (use --force to refresh)
            ex.refs[spec] = InputRef(path=spec, sha256=hashlib.sha256(spec.encode()).hexdigest())
    elif is_url(spec):
        path = fetch_url(spec, ex.cfg)
        ex.ref(path, spec.partition("#")[0])
        if not ex.file(path, url_label(spec)):
            raise IngestError(unsupported)
    elif any(ch in spec for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
        if not matches:
            raise IngestError(f"{spec}: the pattern matches no file")
        for p in matches:
            if p.is_file() and ex.file(p, str(p)):
                ex.ref(p)
    elif (path := Path(spec)).is_file():
        if not ex.file(path, path.name):
            raise IngestError(unsupported)
        ex.ref(path)
    elif path.is_dir():
        ex.folder(path, path.name, ref=True)
    else:
        raise IngestError(f"{spec}: no such file or folder")


def expand_sources(specs: list[str],
                   cfg: IngestConfig | None = None) -> tuple[list[Source], list[InputRef], dict[str, int]]:
    """(sources sorted by label, input refs for the manifest, skipped files per extension)."""
    ex = _Expansion(cfg or IngestConfig())
    for spec in specs:
        _add_spec(ex, spec)
    return sorted(ex.sources.values()), list(ex.refs.values()), dict(sorted(ex.skipped.items()))
