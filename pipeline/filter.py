"""Filter: PII redaction, quality rules, offensive-content filtering, deduplication and the audit.

    quill stage filter --input data/runs/dev/clean/manifest.json --out data/runs/dev/filter

Pass 1, per docs shard (in this process, a process pool or on Dask: `pipeline.io.executor`), a batch of
documents at a time: redact PII, tokenize the batch once (`WordArrays`), apply the quality and
offensive-content rules, and write survivors to a scratch folder with their exact-dedup keys,
MinHash signatures, scores and what the representation audit observed in them. Dedup, in steps
over shards and partitions on the same executor (`pipeline.dedup_steps`; nothing per document in
this process): exact then near duplicates in shard order; the first document of each cluster is
kept and named in the others' `detail`. Pass 2, per shard again: drop the duplicates, write the kept
docs, count the audit of the kept ones and, if configured, write gender-swapped copies. Lines
removed from long documents in line mode go to `excluded_lines/`. Quarantined documents hold the
redacted text: PII never leaves the stage. Every file is named by its input shard, so the output is the same on any
executor.
"""

from __future__ import annotations

import json
import logging
import shutil
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import FilterConfig
from pipeline.dedup_steps import drop_list, find_duplicates
from pipeline.io.docshards import ShardWriter, iter_batches, rel_paths
from pipeline.io.executor import open_executor, run_shards
from pipeline.io.progress import MB, Progress, shard_sizes
from pipeline.manifest import Manifest, read_manifest, run_stage, stage_inputs
from pipeline.sieve import Sieve, Tally, add_counts, finish, merge_tallies, require_documents
from pipeline.text.audit import Audit, Observations, gender_swap, observe, report_lines, sorted_counts
from pipeline.text.dedup import MinHasher, exact_keys
from pipeline.text.offensive.classifier import classifier_votes
from pipeline.text.offensive.prescreen import offensive_candidates
from pipeline.text.offensive.score import forget as forget_offensive
from pipeline.text.offensive.score import line_score_bound, line_scores, offensive_score
from pipeline.text.pii import pii_candidates, redact_pii
from pipeline.text.quality import quality_reasons
from pipeline.text.wordarrays import WordArrays

log = logging.getLogger(__name__)
LINE_SCHEMA = pa.schema([("id", pa.string()), ("line_no", pa.int64()), ("line", pa.string()), ("score", pa.float64())])
PERF_ONLY = {"executor", "num_workers", "dask_address"}  # where the work runs never changes the output
SCRATCH = ".pass1"
DEDUP_WORK = f"{SCRATCH}/dedup"  # the dedup steps' partition files (`pipeline.dedup_steps`)


def filter_docs(in_manifest: Path, out_dir: Path, cfg: FilterConfig, force: bool = False,
                executor: Any = None) -> Manifest:
    """The filter stage; `executor` (a name or an Executor/dask Client) overrides `cfg.executor`."""
    stage_cfg = cfg.model_dump(mode="json", exclude=PERF_ONLY)
    work = partial(_filter, Path(in_manifest), cfg=cfg, executor=executor or cfg.executor)
    return run_stage("filter", out_dir, stage_inputs(in_manifest, "filter"), stage_cfg, work, force=force)


# --- pass 1: screening ---------------------------------------------------------------------------


def _score_json(score: float) -> str:
    return "0.0" if score == 0 else json.dumps(round(score, 4))


def _with_score(meta: str | None, score: float) -> str:
    """`meta` (a JSON object) with "offensive_score" set; plain string work for the common case."""
    value = _score_json(score)
    if not meta or meta == "{}":
        return f'{{"offensive_score": {value}}}'
    if '"offensive_score"' in meta or not meta.endswith("}"):
        return json.dumps({**json.loads(meta), "offensive_score": round(score, 4)}, ensure_ascii=False)
    return f'{meta[:-1]}, "offensive_score": {value}}}'


def _with_scores(metas: pa.Array | pa.ChunkedArray, scores: np.ndarray) -> pa.Array:
    """[_with_score(meta, score) for each row], with Arrow string kernels for the usual meta (an object
    without the key): only the others (null, "{}", the key already there, not an object) go one by one."""
    metas = metas.combine_chunks() if isinstance(metas, pa.ChunkedArray) else metas
    values = pa.array([_score_json(s) for s in scores.tolist()], pa.string())
    plain = pc.and_(pc.ends_with(metas, "}"), pc.invert(pc.match_substring(metas, '"offensive_score"')))
    plain = pc.and_(plain, pc.not_equal(metas, "{}")).fill_null(False)
    out = pc.binary_join_element_wise(pc.utf8_slice_codeunits(metas, 0, -1), ', "offensive_score": ', values, "}", "")
    other = np.flatnonzero(~plain.to_numpy(zero_copy_only=False))
    if len(other):
        fixed = [_with_score(metas[i].as_py(), s) for i, s in zip(other.tolist(), scores[other].tolist())]
        out = pc.replace_with_mask(out, pc.invert(plain), pa.array(fixed, pa.string()))
    return out


def _redact(texts: list[str], metas: list[str | None], counts: dict[str, int]) -> bool:
    """Replace PII in place in the texts that may hold some, noting what was found in their meta;
    True when any text changed."""
    changed = False
    for i in pii_candidates(texts):
        text, found = redact_pii(texts[i])
        if found:
            texts[i] = text
            metas[i] = json.dumps({**json.loads(metas[i] or "{}"), "pii_redacted": found}, ensure_ascii=False)
            add_counts(counts, found)
            changed = True
    return changed


def _line_mode(text: str, cfg: FilterConfig) -> bool:
    """Whether `text` loses only its offending lines (line mode, a long text) rather than going whole."""
    return cfg.offensive.mode == "line" and text.count("\n") + 1 >= cfg.offensive.line_mode_min_lines


def _classifier_votes(words: WordArrays, texts: list[str], reasons: list[str | None],
                      cfg: FilterConfig) -> dict[int, list[float]]:
    """{document: the classifier's votes on its units} for the documents it votes on: units are the lines
    of a long text in line mode, else the whole text (the units the lexicon scores)."""
    if cfg.offensive.classifier == "none":
        return {}
    threshold = cfg.offensive.classifier_threshold(cfg.quality.profile)
    votes = classifier_votes(words, texts, threshold, [_line_mode(t, cfg) for t in texts])
    return {i: v for i, v in votes.items() if reasons[i] is None}


class _Scored(NamedTuple):
    text: str  # what is left of the document
    score: float
    removed: list[tuple[int, str, float]]  # (line number, line, score) of the lines removed in line mode
    lexicon: int  # units (lines, or the whole text) the lexicon alone would drop
    classifier: int  # units the classifier's vote alone would drop


def _score_offensive(text: str, cfg: FilterConfig, votes: list[float] | None = None) -> _Scored:
    """In line mode a long document loses only its offending lines. A unit (line or whole text) scores the
    higher of the lexicon's score and the classifier's vote on it."""
    limit = cfg.offensive.threshold
    if _line_mode(text, cfg) and (votes or line_score_bound(text) >= limit):  # else no line can go
        lexicon = line_scores(text)
        votes = votes or [0.0] * len(lexicon)
        scores = [max(s, v) for s, v in zip(lexicon, votes)]
        lines = text.split("\n")
        removed = [(n, line, s) for n, (line, s) in enumerate(zip(lines, scores), 1) if s >= limit]
        if removed:
            text = "\n".join(line for line, s in zip(lines, scores) if s < limit).strip("\n")
        return _Scored(text, offensive_score(text), removed, sum(s >= limit for s in lexicon),
                       sum(v >= limit for v in votes))
    lexicon, vote = offensive_score(text), votes[0] if votes else 0.0
    return _Scored(text, max(lexicon, vote), [], int(lexicon >= limit), int(vote >= limit))


def _shifted(seen: Observations, by: int) -> Observations:
    """Observations of a batch's survivors, numbered by their row in the shard's scratch docs."""
    return seen._replace(term_doc=seen.term_doc + by, phrase_doc=seen.phrase_doc + by, pair_doc=seen.pair_doc + by)


def screen_shard(job: dict[str, Any]) -> Tally:
    """Pass 1 over one docs shard, a batch at a time: redact PII, apply the quality and offensive-content
    rules, write survivors to scratch with their dedup keys, MinHash signatures and scores."""
    cfg: FilterConfig = job["cfg"]
    stage_dir, tag = Path(job["stage_dir"]), f"{job['shard']:05d}"
    sieve = Sieve(stage_dir, tag)
    pii_counts: dict[str, int] = {}
    flagged_counts: dict[str, int] = {}  # units the lexicon and the classifier would each drop
    scratch = ShardWriter(stage_dir / SCRATCH, f"docs_{tag}", compression="none")  # read once, then deleted
    lines_out = ShardWriter(stage_dir / "excluded_lines", f"lines_{tag}", LINE_SCHEMA)
    hasher = MinHasher(cfg.dedup.num_perm, cfg.dedup.shingle_size)
    keys, signatures, kept_scores, seen = [], [], [], []
    n_kept = 0
    for table in iter_batches([Path(job["path"])]):
        forget_offensive()
        texts, metas = table.column("text").to_pylist(), table.column("meta").to_pylist()
        redacted = cfg.pii.redact and _redact(texts, metas, pii_counts)
        words = WordArrays.from_texts(texts)
        reasons = quality_reasons(texts, words, cfg.quality)
        scores = np.zeros(len(texts))
        details = [f"profile={cfg.quality.profile}" if r else "" for r in reasons]
        edited = []  # docs that lost offending lines: their words changed
        votes = _classifier_votes(words, texts, reasons, cfg)
        for i in sorted(set(np.flatnonzero(offensive_candidates(words)).tolist()) | votes.keys()):
            if reasons[i] is not None:
                continue
            scored = _score_offensive(texts[i], cfg, votes.get(i))
            scores[i], unit = scored.score, "lines" if scored.removed else "docs"
            if scored.lexicon or scored.classifier:
                flagged = {f"lexicon_{unit}": scored.lexicon, f"classifier_{unit}": scored.classifier}
                add_counts(flagged_counts, {k: v for k, v in flagged.items() if v})
            if scores[i] >= cfg.offensive.threshold or not scored.text.strip():
                # whole: the doc's row explains its lines
                reasons[i], details[i] = "offensive", f"score={scores[i]:.2f}"
            elif scored.removed:
                texts[i] = scored.text
                edited.append(i)
                for n, line, s in scored.removed:
                    lines_out.add({"id": table.column("id")[i].as_py(), "line_no": n, "line": line, "score": s})
        if redacted or edited:  # the Arrow columns are rebuilt only when some text changed
            table = table.set_column(1, "text", pa.array(texts, pa.string()))
            table = table.set_column(3, "meta", pa.array(metas, pa.string()))
        gone = [i for i, r in enumerate(reasons) if r is not None]
        if gone:  # quarantined with the redacted text: PII never leaves the stage
            sieve.drop_batch(table.take(gone), [reasons[i] for i in gone], [details[i] for i in gone],
                             [scores[i] if reasons[i] == "offensive" else None for i in gone])
            offensive = [scores[i] for i in gone if reasons[i] == "offensive"]
            sieve.tally.count_scores("dropped", np.array(offensive))
        kept = np.array([r is None for r in reasons], dtype=bool)
        if not kept.any():
            continue
        if edited:  # some documents lost offending lines: their words changed
            words = WordArrays.from_texts(texts)
        keys.append(exact_keys(words)[kept])
        if cfg.dedup.near:
            signatures.append(hasher.signatures(words)[kept])
        rows = np.flatnonzero(kept)
        if cfg.audit.enabled:  # observed now, counted in pass 2 for the documents dedup keeps
            seen.append(_shifted(observe(words).take(rows), n_kept))
        n_kept += len(rows)
        kept_scores.append(scores[kept])
        survivors = table.filter(pa.array(kept))
        survivors = survivors.set_column(3, "meta", _with_scores(survivors.column("meta"), scores[kept]))
        scratch.add_table(survivors, pc.binary_length(survivors.column("text")).to_numpy(zero_copy_only=False))
    tally = sieve.close()
    tally.counts.update(pii_redacted=pii_counts, offensive_lines_dropped=lines_out.count,
                        offensive_flagged=dict(sorted(flagged_counts.items())))
    arrays = stage_dir / SCRATCH / f"dedup_{tag}.npz"
    arrays.parent.mkdir(parents=True, exist_ok=True)
    audit = {f"audit_{k}": np.concatenate([getattr(o, k) for o in seen]) for k in Observations._fields} if seen else {}
    np.savez(arrays, keys=np.concatenate(keys) if keys else np.zeros(0, "S16"),
             signatures=np.concatenate(signatures) if signatures else np.zeros((0, cfg.dedup.num_perm), np.uint32),
             scores=np.concatenate(kept_scores) if kept_scores else np.zeros(0), **audit)
    tally.outputs.update(scratch=rel_paths(scratch.close(), stage_dir),
                         dedup=[arrays.relative_to(stage_dir).as_posix()],
                         excluded_lines=rel_paths(lines_out.close(), stage_dir))
    return tally


# --- pass 2: dedup, audit, augmentation ------------------------------------------------------------


def finish_shard(job: dict[str, Any]) -> Tally:
    """Pass 2 over one shard's scratch docs: drop its duplicates, keep the rest, count the audit of the
    kept ones from what pass 1 observed, and write gender-swapped copies if configured."""
    cfg: FilterConfig = job["cfg"]
    stage_dir, tag = Path(job["stage_dir"]), f"{job['shard']:05d}"
    duplicates = drop_list(stage_dir / DEDUP_WORK, job["shard"])
    sieve = Sieve(stage_dir, tag, excluded_prefix="duplicates")
    augmented = ShardWriter(stage_dir, f"augmented_{tag}")
    arrays = np.load(stage_dir / job["dedup"])
    scores = arrays["scores"]
    dup_rows = duplicates["rows"]
    row = 0
    for table in iter_batches([stage_dir / p for p in job["scratch"]]):
        first, row = row, row + table.num_rows
        a, b = np.searchsorted(dup_rows, [first, row]).tolist()
        keep = np.ones(table.num_rows, dtype=bool)
        if b > a:
            gone = dup_rows[a:b] - first
            keep[gone] = False
            sieve.drop_batch(table.take(gone), duplicates["reasons"][a:b], duplicates["details"][a:b])
        sieve.keep_batch(table.filter(pa.array(keep)))
        sieve.tally.count_scores("kept", scores[first:row][keep])
        if cfg.audit.counterfactual:
            for doc in table.filter(pa.array(keep)).to_pylist():
                if (swapped := gender_swap(doc["text"])) != doc["text"]:
                    meta = {**json.loads(doc["meta"]), "augmented": "gender_swap", "augmented_from": doc["id"]}
                    augmented.add({**doc, "id": f"{doc['id']}#swap", "text": swapped, "meta": meta})
    tally = sieve.close()
    tally.outputs["docs"] += rel_paths(augmented.close(), stage_dir)
    if cfg.audit.enabled:
        kept = np.ones(len(scores), dtype=bool)
        kept[dup_rows] = False
        kept = np.flatnonzero(kept)
        seen = Observations(*(arrays[f"audit_{k}"] for k in Observations._fields)) if "audit_term" in arrays else None
        audit = Audit()
        if seen is not None:
            audit.add_observations(seen.take(kept), len(kept))
        tally.counts["audit"] = audit.counts
    if cfg.audit.counterfactual:
        tally.counts["docs_added"] = {"counterfactual": augmented.count}
    return tally


def _warm_up(cfg: FilterConfig) -> None:
    """Build every per-process table (and load or compile every numba kernel) once here, so forked shard
    workers inherit them instead of each building its own."""
    texts = ["Warm up: a doctor and her son sh1t 555-014-2231 ann@example.org, all people should stay."]
    words = WordArrays.from_texts(texts)
    pii_candidates(texts)
    quality_reasons(texts, words, cfg.quality)
    offensive_candidates(words)
    offensive_score(texts[0])
    observe(words)
    exact_keys(words)
    MinHasher(cfg.dedup.num_perm, cfg.dedup.shingle_size).signatures(words)
    if cfg.offensive.classifier != "none":  # loads the weights and compiles the kernels once, before any work
        classifier_votes(words, texts, 0.5, [False])


def _filter(in_manifest: Path, stage_dir: Path, cfg: FilterConfig, executor: Any) -> tuple[dict, dict]:
    shards = read_manifest(in_manifest).output_list("docs")
    require_documents("filter", shards)
    _warm_up(cfg)
    jobs = [{"shard": i, "path": str(p), "stage_dir": str(stage_dir), "cfg": cfg} for i, p in enumerate(shards)]
    sizes = shard_sizes(shards)
    total = sum(b for _, b in sizes) / MB
    with open_executor(executor, len(jobs), cfg.num_workers, cfg.dask_address) as pool:  # one for every step
        run = partial(run_shards, executor=pool)
        with Progress("filter: screen", total_mb=total) as bar:
            screened = run(screen_shard, jobs, on_result=lambda job, _: bar.update(*sizes[job["shard"]]))
        parts = [{"scratch": t.outputs.pop("scratch"), "dedup": t.outputs.pop("dedup")[0]} for t in screened]
        find_duplicates(stage_dir / DEDUP_WORK, stage_dir, parts, cfg.dedup, run)
        with Progress("filter: write", total_mb=total) as bar:
            finals = run(finish_shard, [{**job, **part} for job, part in zip(jobs, parts)],
                         on_result=lambda job, _: bar.update(*sizes[job["shard"]]))
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
