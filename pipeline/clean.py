"""Clean: normalise text, strip boilerplate, enforce length bounds and keep the configured languages.

    quill stage clean --input data/runs/dev/ingest/manifest.json --out data/runs/dev/clean

The text functions live in `pipeline.textclean`; this module is the stage around them. Each docs
shard of the input is cleaned on its own (in this process, a process pool or on Dask, see
`pipeline.shards`) into `docs_<shard>_*.parquet` and `excluded/excluded_<shard>_*.parquet`.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from pipeline.config import CleanConfig
from pipeline.docs import Sieve, Tally, finish, iter_docs, merge_tallies
from pipeline.manifest import Manifest, input_refs, read_manifest, run_stage
from pipeline.shards import run_shards
from pipeline.textclean import clean_text, detect_language

log = logging.getLogger(__name__)
# Knobs that change where the work runs, never its output: kept out of the config hash.
PERF_ONLY = {"executor", "num_workers", "dask_address"}


def clean(in_manifest: Path, out_dir: Path, cfg: CleanConfig, force: bool = False, executor: Any = None) -> Manifest:
    """The clean stage; `executor` (a name or an Executor/dask Client) overrides `cfg.executor`."""
    stage_cfg = cfg.model_dump(mode="json", exclude=PERF_ONLY)
    work = partial(_clean, Path(in_manifest), cfg=cfg, executor=executor or cfg.executor)
    return run_stage("clean", out_dir, input_refs([in_manifest]), stage_cfg, work, force=force)


def clean_reason(text: str, cfg: CleanConfig) -> tuple[str, str, float | None]:
    """('', '', None) to keep; else (reason, detail, score) for the first failing check."""
    if len(text) < cfg.min_chars:
        return "too_short", f"{len(text)} chars < {cfg.min_chars}", None
    if len(text) > cfg.max_chars:
        return "too_long", f"{len(text)} chars > {cfg.max_chars}", None
    if cfg.languages:
        lang, score = detect_language(text)
        if lang not in cfg.languages or score < cfg.min_language_score:
            return "language", f"{lang} ({score:.2f})", score
    return "", "", None


def clean_shard(job: dict[str, Any]) -> Tally:
    """Clean one docs shard into the stage folder; returns its tally."""
    cfg: CleanConfig = job["cfg"]
    sieve = Sieve(Path(job["stage_dir"]), tag=f"{job['shard']:05d}")
    sieve.tally.counts["docs_changed"] = 0
    for doc in iter_docs([Path(job["path"])]):
        text = clean_text(doc["text"], cfg)
        sieve.tally.counts["docs_changed"] += text != doc["text"]
        reason, detail, score = clean_reason(text, cfg)
        if reason:
            sieve.drop(doc, reason, detail, score)  # quarantine the original text, not the cleaned one
        else:
            sieve.keep({**doc, "text": text})
    return sieve.close()


def _clean(in_manifest: Path, stage_dir: Path, cfg: CleanConfig, executor: Any) -> tuple[dict, dict]:
    shards = read_manifest(in_manifest).output_list("docs")
    jobs = [{"shard": i, "path": str(p), "stage_dir": str(stage_dir), "cfg": cfg} for i, p in enumerate(shards)]
    tally = merge_tallies(run_shards(clean_shard, jobs, executor, cfg.num_workers, cfg.dask_address))
    outputs, stats = finish(stage_dir, "clean", tally)
    log.info("clean: kept %d of %d, dropped %s", stats["docs_kept"], stats["docs_in"], stats["dropped"])
    return outputs, stats
