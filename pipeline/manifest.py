"""Stage manifests: the only thing stages pass to each other, and the marker that a stage is done.

A stage writes into `<out>.partial/`, writes `manifest.json` there last, then swaps the folder into
place, so a crash or kill at any point leaves the previous good output (if any) intact. A stage
whose existing manifest names the same inputs (paths and sha256), the same config hash and whose
outputs are all present and unchanged (sha256 recorded per file) is skipped; so is one whose code
(the hash of the source files its module imports) is the same. Output paths are relative to the run
folder (the stage folder's parent), so a run folder can be moved or rsynced.

A stage reads only the manifest of the stage before it (`stage_inputs` refuses any other, and any whose
files changed since they were written), and holds a lock on its output folder while it runs.
"""

from __future__ import annotations

import ast
import contextvars
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pipeline.config import RENAMED

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
# Which stage's manifest each stage reads.
EXPECTS = {"clean": "ingest", "filter": "clean", "tokenize": "filter", "train": "tokenize", "evaluate": "train",
           "register": "evaluate"}


class StageInputError(ValueError):
    """A stage was given input it must not use (another stage's manifest, changed files, no documents,
    a folder another process writes): the CLI prints the message and exits 2."""


class EmptyCorpus(StageInputError):
    """No documents left to pass on."""


class NotUpToDate(Exception):
    """Raised by run_stage under check_only() instead of running a stage."""

    def __init__(self, stage: str, why: str):
        super().__init__(f"{stage}: {why}")
        self.stage, self.why = stage, why


_CHECK_ONLY = contextvars.ContextVar("check_only", default=False)


@contextmanager
def check_only() -> Iterator[None]:
    """Within: a stage function returns its manifest when it is up to date and raises NotUpToDate instead of
    running (no lock, no work), so a caller can ask whether a whole run would do anything, cheaply."""
    token = _CHECK_ONLY.set(True)
    try:
        yield
    finally:
        _CHECK_ONLY.reset(token)


class InputRef(BaseModel):
    path: str
    sha256: str


class Manifest(BaseModel):
    stage: str
    inputs: list[InputRef]
    config_hash: str
    config: dict[str, Any] = Field(default_factory=dict)
    code_version: str
    code_hash: str = Field("", description="sha256 of the source files the stage's module imports (see code_hash).")
    outputs: dict[str, Any] = Field(description="Names -> paths (or lists of paths) relative to the run folder.")
    stats: dict[str, Any] = Field(default_factory=dict)
    output_sha256: dict[str, str] = Field(default_factory=dict, description="Every output file (folders expanded), "
                                          "relative to the run folder -> its sha256 when the stage wrote it.")
    created_at: str
    path: Path | None = Field(None, exclude=True, description="Where this manifest was read from.")

    @property
    def stage_dir(self) -> Path:
        assert self.path is not None, "manifest was not read from disk"
        return self.path.parent

    @property
    def run_dir(self) -> Path:
        return self.stage_dir.parent

    def output(self, name: str) -> Path:
        """One output as an absolute path."""
        return self.run_dir / self.outputs[name]

    def output_list(self, name: str) -> list[Path]:
        return [self.run_dir / p for p in self.outputs.get(name, [])]

    def changed_outputs(self) -> list[str]:
        """Output files (relative to the run folder) missing or not as the stage wrote them."""
        changed = []
        for value in self.outputs.values():
            for rel in value if isinstance(value, list) else [value]:
                if not (self.run_dir / rel).exists():
                    changed.append(f"{rel} (missing)")
        for rel, digest in self.output_sha256.items():
            path = self.run_dir / rel
            if not path.is_file():
                changed.append(f"{rel} (missing)")
            elif output_digest(path) != digest:
                changed.append(f"{rel} (sha256 differs)")
        return sorted(set(changed))


# Stage outputs this process has hashed, by (device, inode, size, mtime_ns), which a rename keeps and a write
# or a replacement changes: a stage's outputs are hashed once per run, not again when the next stage checks
# them as its input (a no-op rerun read every file twice).
_DIGESTS: dict[tuple[int, int, int, int], str] = {}


def output_digest(path: Path) -> str:
    """sha256_file of a stage output, remembered for this process while the file is unchanged."""
    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if (digest := _DIGESTS.get(key)) is None:
        digest = _DIGESTS[key] = sha256_file(path)
    return digest


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# Config sections renamed since run folders were first written are hashed under their old names: the same
# settings keep the same hash, so existing stage outputs stay valid.
_HASHED_AS = {new.rsplit(".", 1)[1]: old.rsplit(".", 1)[1] for old, new in RENAMED.items()}


def config_hash(cfg: BaseModel | dict) -> str:
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    data = {_HASHED_AS.get(k, k): v for k, v in data.items()}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


_ROOT = Path(__file__).resolve().parent.parent
_CODE_PACKAGES = ("pipeline", "model")
_DATA_SUFFIXES = {".txt", ".tsv", ".json", ".jsonl"}


def _module_file(name: str) -> Path | None:
    if name.split(".")[0] not in _CODE_PACKAGES:
        return None
    base = _ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(name: str, path: Path) -> set[str]:
    """Modules of pipeline/ and model/ that the file imports (also inside functions), as dotted names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package
                for _ in range(node.level - 1):
                    up = up.rpartition(".")[0]
                base = f"{up}.{base}" if base else up
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pipeline.text import dedup`
    return {m for m in found if _module_file(m)}


@cache
def code_files(stage: str) -> tuple[Path, ...]:
    """The source of `pipeline.<stage>`, every pipeline/ or model/ module it imports (transitively) and the data
    files beside them (lexicons, word lists, prompts): what decides the stage's output besides input and config."""
    todo, seen = [f"pipeline.{stage}"], {}
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        todo.extend(_imported(name, path))
    folders = {path.parent for path in seen.values()}
    data = {p for f in folders for p in [*f.glob("*"), *f.glob("*/*")] if p.suffix in _DATA_SUFFIXES and p.is_file()}
    return tuple(sorted(set(seen.values()) | data))


@cache
def code_hash(stage: str) -> str:
    """sha256 over code_files(stage): a change to the rules a stage applies reruns it, a change elsewhere does
    not. Computed once per process (a few ms: the files are small)."""
    h = hashlib.sha256()
    for path in code_files(stage):
        h.update(f"{path.relative_to(_ROOT).as_posix()}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit (and '+dirty') when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("quill")
    except PackageNotFoundError:
        ver = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{ver}+g{sha}{'.dirty' if dirty else ''}" if sha else ver


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(path: Path | str) -> Manifest:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no manifest at {path}: run the previous stage first (or pass its manifest.json)")
    try:
        m = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not a valid Quill manifest: {exc}") from exc
    m.path = path.resolve()
    return m


def input_refs(paths: Iterable[Path]) -> list[InputRef]:
    refs = []
    for p in map(Path, paths):
        if not p.is_file():
            what = "run the previous stage first (or pass its manifest.json)" if p.name == MANIFEST else "no such file"
            raise FileNotFoundError(f"no manifest at {p}: {what}" if p.suffix == ".json" else f"{p}: {what}")
        refs.append(InputRef(path=str(p.resolve()), sha256=sha256_file(p)))
    return refs


def stage_inputs(in_manifest: Path | str, stage: str) -> list[InputRef]:
    """The input refs of `stage` for the manifest it was given, after checking that the stage before it
    wrote that manifest and that the files it lists are still the ones it wrote."""
    path = Path(in_manifest)
    refs = input_refs([path / MANIFEST if path.is_dir() else path])
    m = read_manifest(refs[0].path)
    expected = EXPECTS[stage]
    if m.stage != expected:
        raise StageInputError(f"{m.path}: {stage} reads the {expected} stage's manifest, but this one is from "
                              f"{m.stage!r}; pass <run>/{expected}/manifest.json")
    changed = m.changed_outputs()
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise StageInputError(f"{m.path}: files of the {expected} stage changed since it wrote them: {shown}; "
                              f"rerun {expected} (it redoes its output) or restore them")
    return refs


def why_stale(out_dir: Path, stage: str, inputs: list[InputRef], cfg_hash: str) -> tuple[Manifest | None, str]:
    """(the existing manifest, '') when it is current: the same stage, inputs, config and code, its outputs
    present and unchanged; else (None, why the stage must run)."""
    path = out_dir / MANIFEST
    if not path.exists():
        return None, "no output yet"
    try:
        m = read_manifest(path)
    except ValueError:
        return None, "its manifest is unreadable"
    if m.stage != stage:
        return None, f"the folder holds the {m.stage!r} stage's output"
    if m.inputs != inputs:
        return None, "its input changed"
    if m.config_hash != cfg_hash:
        return None, "its config changed"
    if m.code_hash != code_hash(stage):
        return None, f"its code changed ({m.code_hash or 'not recorded'} -> {code_hash(stage)})"
    changed = m.changed_outputs()
    if changed:
        return None, f"its output changed: {', '.join(changed[:3])}"
    return m, ""


def current_manifest(out_dir: Path, stage: str, inputs: list[InputRef], cfg_hash: str) -> Manifest | None:
    """The existing manifest if it is current (see why_stale)."""
    return why_stale(out_dir, stage, inputs, cfg_hash)[0]


def lock_path(out_dir: Path) -> Path:
    return out_dir.with_name(f".{out_dir.name}.lock")


@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold the output folder for this process: a second writer fails with the holder's pid. The lock is
    an flock, so the kernel releases it when its holder dies: a lock file left by a killed run is taken over."""
    path = lock_path(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise StageInputError(f"{out_dir} is in use by pid {holder} (lock {path}); wait for it to finish, "
                                  "or write to another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def hash_outputs(base: Path, outputs: dict[str, Any]) -> dict[str, str]:
    """sha256 of every output file (folders expanded), keyed by path relative to `base`, the folder the
    output paths are relative to."""
    files: set[Path] = set()
    for value in outputs.values():
        for rel in value if isinstance(value, list) else [value]:
            path = base / rel
            files |= {p for p in path.rglob("*") if p.is_file()} if path.is_dir() else {path}
    return {p.relative_to(base).as_posix(): output_digest(p) for p in sorted(files) if p.is_file()}


Work = Callable[[Path], tuple[dict[str, Any], dict[str, Any]]]


def run_stage(
    stage: str,
    out_dir: Path,
    inputs: list[InputRef],
    cfg: BaseModel | dict,
    work: Work,
    *,
    force: bool = False,
    keep_partial: bool = False,
) -> Manifest:
    """Run `work(partial_dir) -> (outputs, stats)` unless a current manifest exists; publish atomically.

    `outputs` hold paths relative to the stage folder; they are stored relative to the run folder.
    `keep_partial` leaves an interrupted partial folder in place so `work` can resume from it
    (training checkpoints); data stages start from a clean partial folder. The output folder is locked
    for the whole call.
    """
    out_dir = Path(out_dir).resolve()
    cfg_hash = config_hash(cfg)
    if _CHECK_ONLY.get():
        done, why = why_stale(out_dir, stage, inputs, cfg_hash)
        if done is None or force:
            raise NotUpToDate(stage, why or "--force")
        done.stats["skipped"] = True
        return done
    with output_lock(out_dir):
        done, why = why_stale(out_dir, stage, inputs, cfg_hash)
        if done and not force:
            log.info("%s: up to date, skipped (%s)", stage, done.path)
            done.stats["skipped"] = True
            return done
        log.info("%s: running: %s", stage, "--force" if done else why)
        partial = out_dir.with_name(f"{out_dir.name}.partial")
        if partial.exists() and not keep_partial:
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        outputs, stats = work(partial)
        prefix = out_dir.name
        rel = {k: [f"{prefix}/{p}" for p in v] if isinstance(v, list) else f"{prefix}/{v}" for k, v in outputs.items()}
        hashes = {f"{prefix}/{k}": v for k, v in hash_outputs(partial, outputs).items()}
        manifest = Manifest(
            stage=stage,
            inputs=inputs,
            config_hash=cfg_hash,
            config=cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg,
            code_version=code_version(),
            code_hash=code_hash(stage),
            outputs=rel,
            stats=stats,
            output_sha256=hashes,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        atomic_write_text(partial / MANIFEST, manifest.model_dump_json(indent=2))
        _swap_into_place(partial, out_dir)
        manifest.path = out_dir / MANIFEST
        log.info("%s: wrote %s", stage, manifest.path)
        return manifest


def _swap_into_place(partial: Path, out_dir: Path) -> None:
    old = out_dir.with_name(f"{out_dir.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(partial, out_dir)
    if old.exists():
        shutil.rmtree(old)
