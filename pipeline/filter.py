"""Filter: PII redaction, quality rules, offensive-content filtering, deduplication and the audit.

    quill stage filter --input data/runs/dev/clean/manifest.json --out data/runs/dev/filter

Pass 1, per docs shard (in this process, a process pool or on Dask: `pipeline.shards`): redact
PII, apply the quality and offensive-content rules, write survivors to a scratch folder with their
exact-dedup keys and MinHash signatures. Dedup, here, over all shards in shard order: exact then
near duplicates; the first document of each cluster is kept and named in the others' `detail`.
Pass 2, per shard again: drop the duplicates, write the kept docs, count the representation
audit and, if configured, write gender-swapped copies. Lines removed from long documents in line
mode go to `excluded_lines/`. Quarantined documents hold the redacted text: PII never leaves the
stage. Every file is named by its input shard, so the output is the same on any executor.
"""

from __future__ import annotations

import json
import logging
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.audit import Audit, gender_swap, report_lines, sorted_counts
from pipeline.config import FilterConfig
from pipeline.dedup import MinHasher, exact_key, near_duplicate_groups
from pipeline.docs import ShardWriter, Sieve, Tally, add_counts, finish, iter_docs, merge_tallies, rel_paths
from pipeline.manifest import Manifest, input_refs, read_manifest, run_stage
from pipeline.pii import redact_pii
from pipeline.quality import quality_reason
from pipeline.shards import run_shards
from pipeline.toxicity import line_scores, offensive_score

log = logging.getLogger(__name__)
LINE_SCHEMA = pa.schema([("id", pa.string()), ("line_no", pa.int64()), ("line", pa.string()), ("score", pa.float64())])
PERF_ONLY = {"executor", "num_workers", "dask_address"}  # where the work runs never changes the output
SCRATCH = ".pass1"


def filter_docs(in_manifest: Path, out_dir: Path, cfg: FilterConfig, force: bool = False, executor: Any = None) -> Manifest:
    """The filter stage; `executor` (a name or an Executor/dask Client) overrides `cfg.executor`."""
    stage_cfg = cfg.model_dump(mode="json", exclude=PERF_ONLY)
    work = partial(_filter, Path(in_manifest), cfg=cfg, executor=executor or cfg.executor)
    return run_stage("filter", out_dir, input_refs([in_manifest]), stage_cfg, work, force=force)


# --- pass 1: screening ---------------------------------------------------------------------------


def _without_offensive_lines(doc: dict, cfg: FilterConfig) -> tuple[str, float | None, list[dict]]:
    """Line mode: (text without its offending lines, its score if already known, the removed line rows)."""
    scores = line_scores(doc["text"])
    if not any(scores):
        return doc["text"], 0.0, []  # nothing matched anywhere: the whole text scores 0, no need to score it again
    lines, limit = doc["text"].split("\n"), cfg.toxicity.threshold
    removed = [{"id": doc["id"], "line_no": n, "line": line, "score": s}
               for n, (line, s) in enumerate(zip(lines, scores), 1) if s >= limit]
    return "\n".join(line for line, s in zip(lines, scores) if s < limit).strip("\n"), None, removed


def _screen(doc: dict, cfg: FilterConfig, sieve: Sieve, lines_out: ShardWriter) -> dict | None:
    """Redact, then apply quality and offensive-content rules; None when the doc was dropped."""
    meta = json.loads(doc["meta"] or "{}")
    if cfg.pii.redact:
        text, found = redact_pii(doc["text"])
        if found:
            meta["pii_redacted"] = found
            add_counts(sieve.tally.counts["pii_redacted"], found)
            doc = {**doc, "text": text, "meta": json.dumps(meta, ensure_ascii=False)}
    if reason := quality_reason(doc["text"], cfg.quality):
        sieve.drop(doc, reason, f"profile={cfg.quality.profile}")
        return None
    text, score, removed = doc["text"], None, []
    if cfg.toxicity.mode == "line" and text.count("\n") + 1 >= cfg.toxicity.line_mode_min_lines:
        text, score, removed = _without_offensive_lines(doc, cfg)  # a long document loses only its offending lines
    if score is None:
        score = offensive_score(text)
    if score >= cfg.toxicity.threshold or not text.strip():
        sieve.drop(doc, "offensive", f"score={score:.2f}", score)  # whole: its lines are explained by the doc's row
        sieve.tally.score("dropped", score)
        return None
    for row in removed:
        lines_out.add(row)
    meta["offensive_score"] = round(score, 4)
    return {**doc, "text": text, "meta": json.dumps(meta, ensure_ascii=False)}


def screen_shard(job: dict[str, Any]) -> Tally:
    """Pass 1 over one docs shard; the tally names its scratch docs and dedup arrays."""
    cfg: FilterConfig = job["cfg"]
    stage_dir, tag = Path(job["stage_dir"]), f"{job['shard']:05d}"
    sieve = Sieve(stage_dir, tag)
    sieve.tally.counts.update(pii_redacted={}, offensive_lines_dropped=0)
    scratch = ShardWriter(stage_dir / SCRATCH, f"docs_{tag}")
    lines_out = ShardWriter(stage_dir / "excluded_lines", f"lines_{tag}", LINE_SCHEMA)
    hasher = MinHasher(cfg.dedup.num_perm, cfg.dedup.shingle_size)
    keys, signatures = [], []
    for doc in iter_docs([Path(job["path"])]):
        if (kept := _screen(doc, cfg, sieve, lines_out)) is None:
            continue
        scratch.add(kept)
        keys.append(exact_key(kept["text"]))
        if cfg.dedup.near:
            signatures.append(hasher.signature(kept["text"]))
    tally = sieve.close()
    arrays = stage_dir / SCRATCH / f"dedup_{tag}.npz"
    arrays.parent.mkdir(parents=True, exist_ok=True)
    sigs = np.stack(signatures) if signatures else np.zeros((0, cfg.dedup.num_perm), np.uint32)
    np.savez(arrays, keys=np.array(keys, dtype="S32"), signatures=sigs)
    tally.counts["offensive_lines_dropped"] = lines_out.count
    tally.outputs.update(scratch=rel_paths(scratch.close(), stage_dir), dedup=[arrays.relative_to(stage_dir).as_posix()],
                         excluded_lines=rel_paths(lines_out.close(), stage_dir))
    return tally


# --- dedup over all shards -------------------------------------------------------------------------


def _duplicates(keys: list[bytes], signatures: list[np.ndarray], cfg: FilterConfig) -> dict[int, tuple[str, int]]:
    """{survivor index: (reason, representative index)}; the first of each group is kept."""
    out: dict[int, tuple[str, int]] = {}
    if cfg.dedup.exact:
        first: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key in first:
                out[i] = ("exact_duplicate", first[key])
            else:
                first[key] = i
    if cfg.dedup.near and signatures:
        remaining = [i for i in range(len(keys)) if i not in out]
        groups = near_duplicate_groups([signatures[i] for i in remaining], cfg.dedup.bands, cfg.dedup.threshold)
        for dropped, rep in groups.items():
            out[remaining[dropped]] = ("near_duplicate", remaining[rep])
    return out


def _duplicates_by_shard(stage_dir: Path, screened: list[Tally], cfg: FilterConfig) -> list[dict[int, tuple[str, str]]]:
    """Per shard, {row in its scratch docs: (reason, detail naming the representative)}."""
    keys, signatures, owner = [], [], []
    for shard, tally in enumerate(screened):
        arrays = np.load(stage_dir / tally.outputs["dedup"][0])
        keys += arrays["keys"].tolist()
        signatures += list(arrays["signatures"]) if cfg.dedup.near else []
        owner += [(shard, row) for row in range(len(arrays["keys"]))]
    ids = [pq.read_table(stage_dir / p, columns=["id"]).column("id") for t in screened for p in t.outputs["scratch"]]
    ids = pa.chunked_array([c for col in ids for c in col.chunks], pa.string())
    per_shard: list[dict[int, tuple[str, str]]] = [{} for _ in screened]
    for i, (reason, rep) in _duplicates(keys, signatures, cfg).items():
        shard, row = owner[i]
        per_shard[shard][row] = (reason, f"duplicate of {ids[rep].as_py()}")
    return per_shard


# --- pass 2: dedup, audit, augmentation ------------------------------------------------------------


def finish_shard(job: dict[str, Any]) -> Tally:
    """Pass 2 over one shard's scratch docs: drop its duplicates, keep the rest, audit and augment."""
    cfg: FilterConfig = job["cfg"]
    stage_dir, tag, duplicates = Path(job["stage_dir"]), f"{job['shard']:05d}", job["duplicates"]
    sieve = Sieve(stage_dir, tag, excluded_prefix="duplicates")
    augmented = ShardWriter(stage_dir, f"augmented_{tag}")
    audit = Audit()
    for row, doc in enumerate(iter_docs([stage_dir / p for p in job["scratch"]])):
        if row in duplicates:
            sieve.drop(doc, *duplicates[row])
            continue
        sieve.keep(doc)
        sieve.tally.score("kept", json.loads(doc["meta"]).get("offensive_score", 0.0))
        if cfg.audit.enabled:
            audit.add(doc["text"])
        if cfg.audit.counterfactual and (swapped := gender_swap(doc["text"])) != doc["text"]:
            meta = {**json.loads(doc["meta"]), "augmented": "gender_swap", "augmented_from": doc["id"]}
            augmented.add({**doc, "id": f"{doc['id']}#swap", "text": swapped, "meta": meta})
    tally = sieve.close()
    tally.outputs["docs"] += rel_paths(augmented.close(), stage_dir)
    if cfg.audit.enabled:
        tally.counts["audit"] = audit.counts
    if cfg.audit.counterfactual:
        tally.counts["docs_added"] = {"counterfactual": augmented.count}
    return tally


def _filter(in_manifest: Path, stage_dir: Path, cfg: FilterConfig, executor: Any) -> tuple[dict, dict]:
    shards = read_manifest(in_manifest).output_list("docs")
    jobs = [{"shard": i, "path": str(p), "stage_dir": str(stage_dir), "cfg": cfg} for i, p in enumerate(shards)]
    run = partial(run_shards, executor=executor, num_workers=cfg.num_workers, dask_address=cfg.dask_address)
    screened = run(screen_shard, jobs)
    duplicates = _duplicates_by_shard(stage_dir, screened, cfg)
    finals = run(finish_shard, [{**job, "duplicates": d, "scratch": t.outputs.pop("scratch")}
                                for job, d, t in zip(jobs, duplicates, screened)])
    for t in screened:
        t.outputs.pop("dedup")
    shutil.rmtree(stage_dir / SCRATCH, ignore_errors=True)
    tally = merge_tallies(screened + finals)
    extra, sections = {}, []
    if cfg.audit.enabled:
        extra["audit"] = sorted_counts(tally.counts.pop("audit", {}))
        sections = report_lines(extra["audit"], cfg.audit.top_occupations)
    if cfg.audit.counterfactual:
        extra["docs_out"] = tally.kept + sum(tally.counts.get("docs_added", {}).values())
    outputs, stats = finish(stage_dir, "filter", tally, extra, sections)
    log.info("filter: kept %d of %d, dropped %s, pii %s", stats["docs_kept"], stats["docs_in"], stats["dropped"],
             stats["pii_redacted"])
    return outputs, stats
