"""Clean: normalise text, strip boilerplate, enforce length bounds and keep the configured languages.

    quill stage clean --input data/runs/dev/ingest/manifest.json --out data/runs/dev/clean

The text functions live in `pipeline.text.normalize`, `pipeline.text.normalize_batch` and `pipeline.text.langid`;
this module is the stage around them. Each docs
shard of the input is cleaned on its own (in this process, a process pool or on Dask, see
`pipeline.io.executor`) into `docs_<shard>_*.parquet` and `excluded/excluded_<shard>_*.parquet`, a
batch of documents at a time: the text functions work on whole batches.
"""

from __future__ import annotations

import logging
import operator
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import CleanConfig
from pipeline.io.docshards import iter_batches
from pipeline.io.executor import run_shards
from pipeline.io.progress import MB, Progress, shard_sizes
from pipeline.manifest import Manifest, read_manifest, run_stage, stage_inputs
from pipeline.sieve import Sieve, Tally, finish, merge_tallies, require_documents
from pipeline.text.langid import foreign_languages
from pipeline.text.normalize_batch import clean_texts

log = logging.getLogger(__name__)
# Knobs that change where the work runs, never its output: kept out of the config hash.
PERF_ONLY = {"executor", "num_workers", "dask_address"}


def clean(in_manifest: Path, out_dir: Path, cfg: CleanConfig, force: bool = False, executor: Any = None) -> Manifest:
    """The clean stage; `executor` (a name or an Executor/dask Client) overrides `cfg.executor`."""
    stage_cfg = cfg.model_dump(mode="json", exclude=PERF_ONLY)
    work = partial(_clean, Path(in_manifest), cfg=cfg, executor=executor or cfg.executor)
    return run_stage("clean", out_dir, stage_inputs(in_manifest, "clean"), stage_cfg, work, force=force)


def clean_reasons(texts: list[str], cfg: CleanConfig) -> list[tuple[str, str, float | None]]:
    """Per text, ('', '', None) to keep or (reason, detail, score) for the first failing check."""
    out: list[tuple[str, str, float | None]] = [("", "", None)] * len(texts)
    sized = []
    for i, n in enumerate(map(len, texts)):
        if n < cfg.min_chars:
            out[i] = ("too_short", f"{n} chars < {cfg.min_chars}", None)
        elif n > cfg.max_chars:
            out[i] = ("too_long", f"{n} chars > {cfg.max_chars}", None)
        else:
            sized.append(i)
    if cfg.languages and sized:  # dropped only when confidently in another language: unsure text stays
        for i, found in zip(sized, foreign_languages([texts[i] for i in sized], cfg.languages,
                                                     cfg.min_language_score)):
            if found is not None:
                out[i] = ("language", f"{found[0]} ({found[1]:.2f})", found[1])
    return out


def clean_shard(job: dict[str, Any]) -> Tally:
    """Clean one docs shard into the stage folder; returns its tally."""
    cfg: CleanConfig = job["cfg"]
    sieve = Sieve(Path(job["stage_dir"]), tag=f"{job['shard']:05d}")
    sieve.tally.counts["docs_changed"] = 0
    for table in iter_batches([Path(job["path"])]):
        raw = table.column("text").to_pylist()
        texts = clean_texts(raw, cfg)
        changed = sum(map(operator.ne, texts, raw))
        sieve.tally.counts["docs_changed"] += changed
        reasons = clean_reasons(texts, cfg)
        keep = [not r[0] for r in reasons]
        cleaned = table.set_column(1, "text", pa.array(texts, pa.string())) if changed else table
        sieve.keep_batch(cleaned.filter(pa.array(keep)))
        gone = [i for i, k in enumerate(keep) if not k]
        if gone:  # quarantine the original text, not the cleaned one
            sieve.drop_batch(table.take(gone), *zip(*(reasons[i] for i in gone)))
    return sieve.close()


def _clean(in_manifest: Path, stage_dir: Path, cfg: CleanConfig, executor: Any) -> tuple[dict, dict]:
    shards = read_manifest(in_manifest).output_list("docs")
    require_documents("clean", shards)
    clean_reasons(clean_texts(["Warm up: the tables are built here once, and forked workers inherit them."], cfg), cfg)
    jobs = [{"shard": i, "path": str(p), "stage_dir": str(stage_dir), "cfg": cfg} for i, p in enumerate(shards)]
    sizes = shard_sizes(shards)
    with Progress("clean", total_mb=sum(b for _, b in sizes) / MB) as bar:
        tally = merge_tallies(run_shards(clean_shard, jobs, executor, cfg.num_workers, cfg.dask_address,
                                         on_result=lambda job, _: bar.update(*sizes[job["shard"]])))
    outputs, stats = finish(stage_dir, "clean", tally)
    log.info("clean: kept %d of %d, dropped %s", stats["docs_kept"], stats["docs_in"], stats["dropped"])
    return outputs, stats
