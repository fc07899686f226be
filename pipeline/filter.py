"""Filter: PII redaction, quality rules, offensive-content filtering and deduplication.

    quill stage filter --input data/runs/dev/clean/manifest.json --out data/runs/dev/filter

Pass 1 redacts PII, applies the quality and offensive-content rules and writes survivors to a
scratch folder while computing dedup keys and MinHash signatures. Pass 2 drops exact and near
duplicates (the first document of each cluster is kept, the cluster's representative named in
`detail`). Lines removed from long documents in line mode go to `excluded_lines/`.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa

from pipeline.config import FilterConfig
from pipeline.dedup import MinHasher, exact_key, near_duplicate_groups
from pipeline.docs import DOC_SCHEMA, ShardWriter, Sieve, iter_docs, rel_paths
from pipeline.manifest import Manifest, input_refs, read_manifest, run_stage
from pipeline.pii import redact_pii
from pipeline.quality import quality_reason
from pipeline.toxicity import line_scores, offensive_score

log = logging.getLogger(__name__)

LINE_SCHEMA = pa.schema([("id", pa.string()), ("line_no", pa.int64()), ("line", pa.string()), ("score", pa.float64())])


def filter_docs(in_manifest: Path, out_dir: Path, cfg: FilterConfig, force: bool = False) -> Manifest:
    return run_stage("filter", out_dir, input_refs([in_manifest]), cfg, lambda tmp: _filter(in_manifest, tmp, cfg), force=force)


def _drop_offensive_lines(doc: dict, cfg: FilterConfig, lines_out: ShardWriter) -> tuple[str, float]:
    """Line mode: remove offending lines of a long document; returns (text, max line score)."""
    lines = doc["text"].split("\n")
    scores = line_scores(doc["text"])
    keep = [line for line, s in zip(lines, scores) if s < cfg.toxicity.threshold]
    for n, (line, s) in enumerate(zip(lines, scores), 1):
        if s >= cfg.toxicity.threshold:
            lines_out.add({"id": doc["id"], "line_no": n, "line": line, "score": s})
    return "\n".join(keep).strip("\n"), max(scores, default=0.0)


def _screen(doc: dict, cfg: FilterConfig, sieve: Sieve, lines_out: ShardWriter, pii_counts: Counter,
            scores: dict[str, list[float]]) -> dict | None:
    """Redact, then apply quality and offensive-content rules; None when the doc was dropped."""
    text = doc["text"]
    meta = json.loads(doc["meta"] or "{}")
    if cfg.pii.redact:
        text, found = redact_pii(text)
        pii_counts.update(found)
        if found:
            meta["pii_redacted"] = found
    if reason := quality_reason(text, cfg.quality):
        sieve.drop(doc, reason, f"profile={cfg.quality.profile}")
        return None
    if cfg.toxicity.mode == "line" and text.count("\n") + 1 >= cfg.toxicity.line_mode_min_lines:
        # A long document loses only its offending lines, whatever its overall score.
        text, _ = _drop_offensive_lines({**doc, "text": text}, cfg, lines_out)
    score = offensive_score(text)
    if score >= cfg.toxicity.threshold or not text.strip():
        sieve.drop(doc, "offensive", f"score={score:.2f}", score)
        scores["dropped"].append(score)
        return None
    scores["kept"].append(score)
    meta["offensive_score"] = round(score, 4)
    return {**doc, "text": text, "meta": json.dumps(meta, ensure_ascii=False)}


def _filter(in_manifest: Path, stage_dir: Path, cfg: FilterConfig) -> tuple[dict, dict]:
    source = read_manifest(in_manifest)
    sieve = Sieve(stage_dir)
    scratch = ShardWriter(stage_dir / ".pass1", "docs", DOC_SCHEMA)
    lines_out = ShardWriter(stage_dir / "excluded_lines", "lines", LINE_SCHEMA)
    hasher = MinHasher(cfg.dedup.num_perm, cfg.dedup.shingle_size)
    pii_counts: Counter = Counter()
    scores: dict[str, list[float]] = {"kept": [], "dropped": []}
    ids, keys, signatures = [], [], []
    for doc in iter_docs(source.output_list("docs")):
        if (kept := _screen(doc, cfg, sieve, lines_out, pii_counts, scores)) is None:
            continue
        scratch.add(kept)
        ids.append(kept["id"])
        keys.append(exact_key(kept["text"]))
        if cfg.dedup.near:
            signatures.append(hasher.signature(kept["text"]))

    duplicate_of = _duplicates(keys, signatures, cfg)
    for i, doc in enumerate(iter_docs(scratch.close())):
        if i in duplicate_of:
            kind, rep = duplicate_of[i]
            sieve.drop(doc, kind, f"duplicate of {ids[rep]}")
        else:
            sieve.keep(doc)
    shutil.rmtree(stage_dir / ".pass1", ignore_errors=True)
    extra = {"pii_redacted": dict(pii_counts), "offensive_lines_dropped": lines_out.count}
    outputs, stats = sieve.close("filter", extra, scores)
    outputs["excluded_lines"] = rel_paths(lines_out.close(), stage_dir)
    log.info("filter: kept %d of %d, dropped %s, pii %s", stats["docs_kept"], stats["docs_in"], stats["dropped"], dict(pii_counts))
    return outputs, stats


def _duplicates(keys: list[str], signatures: list, cfg: FilterConfig) -> dict[int, tuple[str, int]]:
    """{survivor index: (reason, representative index)}; the first of each group is kept."""
    out: dict[int, tuple[str, int]] = {}
    if cfg.dedup.exact:
        first: dict[str, int] = {}
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
