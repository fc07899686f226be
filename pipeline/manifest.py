"""Stage manifests: the only thing stages pass to each other, and the marker that a stage is done.

A stage writes into `<out>.partial/`, writes `manifest.json` there last, then swaps the folder into
place, so a crash or kill at any point leaves the previous good output (if any) intact. A stage
whose existing manifest names the same inputs (paths and sha256), the same config hash and whose
outputs are all present is skipped. Output paths are relative to the run folder (the stage
folder's parent), so a run folder can be moved or rsynced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


class InputRef(BaseModel):
    path: str
    sha256: str


class Manifest(BaseModel):
    stage: str
    inputs: list[InputRef]
    config_hash: str
    config: dict[str, Any] = Field(default_factory=dict)
    code_version: str
    outputs: dict[str, Any] = Field(description="Names -> paths (or lists of paths) relative to the run folder.")
    stats: dict[str, Any] = Field(default_factory=dict)
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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# Config sections renamed since run folders were first written (see pipeline.config.RENAMED), hashed
# under their old names: the same settings keep the same hash, so existing stage outputs stay valid.
_HASHED_AS = {"offensive": "toxicity"}


def config_hash(cfg: BaseModel | dict) -> str:
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    data = {_HASHED_AS.get(k, k): v for k, v in data.items()}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def current_manifest(out_dir: Path, stage: str, inputs: list[InputRef], cfg_hash: str) -> Manifest | None:
    """The existing manifest if it was made from the same inputs and config and its outputs exist."""
    path = out_dir / MANIFEST
    if not path.exists():
        return None
    try:
        m = read_manifest(path)
    except ValueError:
        return None
    if m.stage != stage or m.config_hash != cfg_hash or m.inputs != inputs:
        return None
    for value in m.outputs.values():
        for rel in value if isinstance(value, list) else [value]:
            if not (m.run_dir / rel).exists():
                return None
    return m


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
    (training checkpoints); data stages start from a clean partial folder.
    """
    out_dir = Path(out_dir).resolve()
    cfg_hash = config_hash(cfg)
    if not force and (done := current_manifest(out_dir, stage, inputs, cfg_hash)):
        log.info("%s: up to date, skipped (%s)", stage, done.path)
        done.stats["skipped"] = True
        return done
    partial = out_dir.with_name(f"{out_dir.name}.partial")
    if partial.exists() and not keep_partial:
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    outputs, stats = work(partial)
    prefix = out_dir.name
    rel = {k: [f"{prefix}/{p}" for p in v] if isinstance(v, list) else f"{prefix}/{v}" for k, v in outputs.items()}
    manifest = Manifest(
        stage=stage,
        inputs=inputs,
        config_hash=cfg_hash,
        config=cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg,
        code_version=code_version(),
        outputs=rel,
        stats=stats,
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
