"""The filter's deduplication as steps over shards and partitions, on the stage's executor: no step
gathers the corpus, and the driver holds no per-document arrays (only folder names and counts).

    find_duplicates(work, stage_dir, shards, cfg.dedup, run)   # run(fn, jobs): the stage's executor
    drop_list(work, shard)  -> {"rows", "reasons", "details"}: the shard's duplicates, for pass 2

Input: per shard, what pass 1 left: `dedup` (an .npz of the survivors' exact keys and MinHash
signatures, in row order) and `scratch` (the survivors' Parquet docs, for their ids). A survivor is
named by gid = shard << 32 | row, which orders documents as the corpus does. The result is the one
`pipeline.text.dedup.near_duplicate_groups` gives on the whole corpus after exact dedup: an exact
copy names the first document with its key; among first copies, a near duplicate names the first
document of its cluster (the connected component of its verified LSH candidate pairs).

Steps (each a `run` over jobs, 4 jobs a task, exchanging files through `pipeline.io.partfiles` under `work`):
1. exact, per shard: (exact key, gid) of every survivor, sent to partition hash(exact key) % P (P =
   one per `SHARDS_PER_PARTITION` shards).
2. copies, per partition: runs of equal exact keys, in gid order: each document after the first is
   an exact duplicate of that first one (sent to the first one's shard, to be named) and, for near
   dedup, a copy that its own shard leaves out of the LSH records (it would only bridge clusters).
3. records, per shard: (band, band key, gid) for every survivor that is no copy and every LSH band,
   sent to partition hash(band, band key) % P: 18 bytes a band (carrying the exact key along, to find
   the copies in the buckets instead, took 34).
4. buckets, per partition: runs of equal (band, band key), in gid order, are the LSH buckets; their
   candidate pairs (`bucket_pairs`, as in the single-process grouping) go to the shard of the pair's
   first document.
5. attach, per shard: each pair gets the signature of its first document and goes to the shard of
   its second.
6. verify, per shard: the second signature; pairs that agree on enough positions (`similar`) are
   the verified edges.
7. components, rounds of two steps per partition of the nodes (large-star and small-star, Kiveris et
   al. 2014) until every component of the verified edges is a star around its lowest member: every
   other member is a near duplicate of it. The driver only adds up how many edges each step changed.
8. names, per shard: the ids of the representatives that live there go to their duplicates' shards.
Exact-only and near-only configurations skip what they do not need.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import DedupConfig
from pipeline.io.partfiles import decode_strings, encode_strings, read_parts, write_blocks, write_parts
from pipeline.text.dedup import band_keys, bucket_pairs, similar

Run = Callable[[Callable[[dict[str, Any]], Any], list[dict[str, Any]]], list[Any]]
log = logging.getLogger(__name__)

_ROW_BITS = 32
_ROW_MASK = (1 << _ROW_BITS) - 1
_PART_MIX = np.uint64(0x9E3779B97F4A7C15)  # spreads (band, key) over partitions; any odd constant does
SHARDS_PER_PARTITION = 8  # a bucket partition holds ~8 shards' band records (10,000 docs x 16 bands x 34 B each)
EDGES_PER_PARTITION = 2_000_000  # a components partition holds up to ~2M edges (~100 MB with the sorts)
JOBS_PER_TASK = 4  # shards or partitions one task of a step handles, one after another
_MAX_ROUNDS = 200  # large-star / small-star converges in O(log^2 n) rounds: a few for any real corpus


def find_duplicates(work: Path, stage_dir: Path, shards: list[dict[str, Any]], cfg: DedupConfig, run: Run) -> None:
    """Find the duplicates of every shard; `drop_list(work, shard)` reads each shard's result after."""
    if not (cfg.exact or cfg.near) or not shards:
        return
    n_parts = -(-len(shards) // SHARDS_PER_PARTITION)
    base = {"work": str(work), "stage_dir": str(stage_dir), "cfg": cfg, "n_parts": n_parts}
    per_shard = [{**base, "shard": i, **shard} for i, shard in enumerate(shards)]
    took: dict[str, float] = {}

    def timed(name: str, fn, jobs):  # seconds per step, for the log: where a large corpus spends its time
        start = time.perf_counter()
        # Jobs go in batches of up to JOBS_PER_TASK: a Dask task costs milliseconds of scheduling and
        # transfer, and a step of 100 shards is otherwise 100 tasks of a few milliseconds of work each.
        batches = [jobs[i : i + JOBS_PER_TASK] for i in range(0, len(jobs), JOBS_PER_TASK)]
        out = [r for results in run(_in_batch, [{"fn": fn, "jobs": b} for b in batches]) for r in results]
        took[name] = took.get(name, 0.0) + time.perf_counter() - start
        return out

    parts = [{**base, "part": p} for p in range(n_parts)]
    if cfg.exact:
        timed("exact", _exact_records, per_shard)
        timed("copies", _copies, parts)
    if cfg.near:
        timed("records", _records, per_shard)
        timed("buckets", _buckets, parts)
        pairs = sum(timed("attach", _attach, per_shard))
        n_nodes = max(1, -(-pairs // EDGES_PER_PARTITION))  # verified edges are at most the candidate pairs
        timed("verify", _verify, [{**job, "n_parts": n_nodes} for job in per_shard])
        _components(Path(work), {**base, "n_parts": n_nodes}, lambda fn, jobs: timed("components", fn, jobs))
    timed("names", _names, per_shard)
    log.info("dedup over %d shards, %d partitions: %s", len(shards), n_parts,
             ", ".join(f"{name} {s:.1f} s" for name, s in took.items()))


def _in_batch(batch: dict[str, Any]) -> list[Any]:
    return [batch["fn"](job) for job in batch["jobs"]]


def drop_list(work: Path, shard: int) -> dict[str, Any]:
    """The shard's duplicates: {"rows": sorted rows in its scratch docs, "reasons": [...], "details":
    ["duplicate of <id of the first document of its cluster>", ...]}."""
    found = read_parts(work, "drops", shard)
    if found is None:
        return {"rows": np.zeros(0, np.int64), "reasons": [], "details": []}
    order = np.argsort(found["gid"], kind="stable")
    rep_ids = decode_strings(found["rep_id_data"], found["rep_id_lengths"])
    return {"rows": found["gid"][order] & _ROW_MASK,
            "reasons": np.where(found["near"][order], "near_duplicate", "exact_duplicate").tolist(),
            "details": ["duplicate of " + rep_ids[i] for i in order.tolist()]}


def _shard_of(gid: np.ndarray) -> np.ndarray:
    return gid >> _ROW_BITS


def _npz(job: dict[str, Any], name: str) -> np.ndarray:
    with np.load(Path(job["stage_dir"]) / job["dedup"], allow_pickle=False) as arrays:
        return arrays[name]


def _key_lanes(keys: np.ndarray) -> np.ndarray:
    """(n, 2) uint64 view of "S16" exact keys."""
    return np.frombuffer(keys.tobytes(), "<u8").reshape(len(keys), 2) if len(keys) else np.zeros((0, 2), np.uint64)


def _partition(keys: np.ndarray, salt: np.ndarray | int, n_parts: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        mixed = (keys ^ (np.asarray(salt).astype(np.uint64) * _PART_MIX)) * _PART_MIX
    return ((mixed >> np.uint64(32)) % np.uint64(n_parts)).astype(np.int64)


def _gids(shard: int, n: int) -> np.ndarray:
    return (np.int64(shard) << _ROW_BITS) + np.arange(n, dtype=np.int64)


def _exact_records(job: dict[str, Any]) -> None:
    shard = job["shard"]
    lanes = _key_lanes(_npz(job, "keys"))
    if len(lanes):
        write_parts(Path(job["work"]), "exact", shard, _partition(lanes[:, 0], 0, job["n_parts"]),
                    {"lanes": lanes, "gid": _gids(shard, len(lanes))})


def _runs(*columns: np.ndarray) -> np.ndarray:
    """Start of each run of equal rows of the (sorted) columns, and len(rows) at the end."""
    n = len(columns[0])
    change = np.zeros(n, dtype=bool)
    change[:1] = True
    for c in columns:
        change[1:] |= c[1:] != c[:-1]
    return np.r_[np.flatnonzero(change), n]


def _copies(job: dict[str, Any]) -> None:
    work, part = Path(job["work"]), job["part"]
    rec = read_parts(work, "exact", part)
    if rec is None:
        return
    lanes, gid = rec["lanes"], rec["gid"]
    order = np.lexsort((gid, lanes[:, 1], lanes[:, 0]))
    lanes, gid = lanes[order], gid[order]
    runs = _runs(lanes[:, 0], lanes[:, 1])
    copy = np.ones(len(gid), dtype=bool)
    copy[runs[:-1]] = False
    rep = np.repeat(gid[runs[:-1]], np.diff(runs))
    write_parts(work, "reps", part, _shard_of(rep[copy]),
                {"gid": gid[copy], "rep": rep[copy], "near": np.zeros(int(copy.sum()), dtype=bool)})
    if job["cfg"].near:
        write_parts(work, "copies", part, _shard_of(gid[copy]), {"gid": gid[copy]})


def _records(job: dict[str, Any]) -> None:
    cfg: DedupConfig = job["cfg"]
    work, shard = Path(job["work"]), job["shard"]
    signatures = _npz(job, "signatures")
    gid = _gids(shard, len(signatures))
    if cfg.exact and (copies := read_parts(work, "copies", shard)) is not None:
        keep = np.ones(len(gid), dtype=bool)
        keep[copies["gid"] & _ROW_MASK] = False
        signatures, gid = signatures[keep], gid[keep]
    if not len(gid):
        return
    keys = band_keys(signatures, cfg.bands)
    n_bands = keys.shape[1]
    band = np.tile(np.arange(n_bands, dtype=np.uint16), len(gid))
    keys = keys.reshape(-1)
    write_parts(work, "records", shard, _partition(keys, band, job["n_parts"]),
                {"band": band, "key": keys, "gid": np.repeat(gid, n_bands)})


def _buckets(job: dict[str, Any]) -> None:
    work, part = Path(job["work"]), job["part"]
    rec = read_parts(work, "records", part)
    if rec is None:
        return
    band, key, gid = rec["band"], rec["key"], rec["gid"]
    assert np.all(gid[1:] >= gid[:-1]), "records arrive in gid order"  # so a stable sort keeps it in each bucket
    order = np.lexsort((key, band))
    band, key, gid = band[order], key[order], gid[order]
    starts = _runs(band, key)
    big = np.diff(starts) > 1
    a, b = bucket_pairs(starts[:-1][big], starts[1:][big], gid)
    if len(a):
        pairs = np.unique(np.stack([a, b], axis=1), axis=0)  # a pair met in several bands is verified once
        write_parts(work, "pairs", part, _shard_of(pairs[:, 0]), {"a": pairs[:, 0], "b": pairs[:, 1]})


def _attach(job: dict[str, Any]) -> int:
    work, shard = Path(job["work"]), job["shard"]
    pairs = read_parts(work, "pairs", shard)
    if pairs is None:
        return 0
    both = np.unique(np.stack([pairs["a"], pairs["b"]], axis=1), axis=0)  # met in several partitions
    a, b = both[:, 0], both[:, 1]
    signatures = _npz(job, "signatures")
    write_parts(work, "halves", shard, _shard_of(b), {"a": a, "b": b, "sig_a": signatures[a & _ROW_MASK]})
    return len(a)


def _verify(job: dict[str, Any]) -> None:
    cfg: DedupConfig = job["cfg"]
    work, shard = Path(job["work"]), job["shard"]
    halves = read_parts(work, "halves", shard)
    if halves is None:
        return
    signatures = _npz(job, "signatures")
    ok = similar(halves["sig_a"], signatures[halves["b"] & _ROW_MASK], cfg.threshold)
    _send_edges(work, "cc0", shard, halves["a"][ok], halves["b"][ok], job["n_parts"], to_both=True)


def _node_part(nodes: np.ndarray, n_parts: int) -> np.ndarray:
    """The partition a node's edges go to in the components steps: a hash, so the components' first
    documents (which lean towards the first shards) spread over all of them."""
    with np.errstate(over="ignore"):
        mixed = (nodes.astype(np.uint64) + _PART_MIX) * _PART_MIX
    return ((mixed >> np.uint64(32)) % np.uint64(n_parts)).astype(np.int64)


def _send_edges(work: Path, step: str, source: int, a: np.ndarray, b: np.ndarray, n_parts: int,
                to_both: bool) -> None:
    """Edges a < b to the partition of b, and also of a when `to_both`."""
    if to_both:
        a, b, dest = np.r_[a, a], np.r_[b, b], np.r_[_node_part(a, n_parts), _node_part(b, n_parts)]
    else:
        dest = _node_part(b, n_parts)
    write_parts(work, step, source, dest, {"a": a, "b": b})


def _read_edges(work: Path, step: str, part: int) -> tuple[np.ndarray, np.ndarray] | None:
    edges = read_parts(work, step, part)
    if edges is None or not len(edges["a"]):
        return None
    both = np.unique(np.stack([edges["a"], edges["b"]], axis=1), axis=0)  # an edge may arrive several times
    return both[:, 0], both[:, 1]


def _large_star(job: dict[str, Any]) -> int:
    """Large-star at each node u of this partition: every larger neighbour joins the smallest node of u's
    neighbourhood. Returns how many edges changed."""
    work, part, n = Path(job["work"]), job["part"], job["n_parts"]
    edges = _read_edges(work, f"cc{job['round']}", part)
    if edges is None:
        return 0
    a, b = edges
    mine = _node_part(np.r_[a, b], n) == part
    u, v = np.r_[a, b][mine], np.r_[b, a][mine]  # (node here, neighbour)
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    starts = _runs(u)
    smallest = np.minimum(np.minimum.reduceat(v, starts[:-1]), u[starts[:-1]]) if len(u) else u
    m = np.repeat(smallest, np.diff(starts))
    up = v > u
    _send_edges(work, f"cc{job['round']}s", part, m[up], v[up], n, to_both=False)
    return int(np.count_nonzero(m[up] != u[up]))


def _small_star(job: dict[str, Any]) -> int:
    """Small-star at each node u of this partition: u and its smaller neighbours join the smallest of them.
    Returns how many nodes had more than one smaller neighbour (their edges changed)."""
    work, part, n = Path(job["work"]), job["part"], job["n_parts"]
    edges = _read_edges(work, f"cc{job['round']}s", part)
    if edges is None:
        return 0
    a, u = edges  # every edge came to its larger node u
    order = np.lexsort((a, u))
    a, u = a[order], u[order]
    starts = _runs(u)
    m = np.repeat(a[starts[:-1]], np.diff(starts))  # the smallest smaller neighbour
    lower = a != m
    _send_edges(work, f"cc{job['round'] + 1}", part, np.r_[m[starts[:-1]], m[lower]], np.r_[u[starts[:-1]], a[lower]],
                n, to_both=True)
    return int(np.count_nonzero(np.diff(starts) > 1))


def _stars(job: dict[str, Any]) -> None:
    """After the last round every component is a star around its lowest member: each other member, the
    larger node of its one edge, is a near duplicate of it."""
    work, part = Path(job["work"]), job["part"]
    edges = _read_edges(work, f"cc{job['round']}", part)
    if edges is None:
        return
    a, b = edges
    mine = _node_part(b, job["n_parts"]) == part
    write_parts(work, "near_reps", part, _shard_of(a[mine]),
                {"gid": b[mine], "rep": a[mine], "near": np.ones(int(mine.sum()), dtype=bool)})


def _components(work: Path, base: dict[str, Any], run: Run) -> None:
    """Connected components of the verified edges with the alternating large-star / small-star rounds of
    Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014): each round two steps over
    partitions of the nodes, O(log^2 n) rounds; each step holds its partition's edges only (a component's
    edges meet in its lowest member's partition at the end). Stops when a round changes no edge."""
    parts = [{**base, "part": p} for p in range(base["n_parts"])]
    for r in range(_MAX_ROUNDS):
        changed = sum(run(_large_star, [{**job, "round": r} for job in parts]))
        changed += sum(run(_small_star, [{**job, "round": r} for job in parts]))
        if not changed:
            run(_stars, [{**job, "round": r + 1} for job in parts])
            return
    raise RuntimeError(f"dedup: connected components did not converge in {_MAX_ROUNDS} rounds")


def _names(job: dict[str, Any]) -> None:
    work, shard = Path(job["work"]), job["shard"]
    found = [r for r in (read_parts(work, "reps", shard), read_parts(work, "near_reps", shard)) if r is not None]
    if not found:
        return
    reps = {name: np.concatenate([r[name] for r in found]) for name in found[0]}
    stage_dir = Path(job["stage_dir"])
    ids = pa.chunked_array([chunk for path in job["scratch"]
                            for chunk in pq.read_table(stage_dir / path, columns=["id"]).column("id").chunks],
                           pa.string())
    rep_ids = ids.take(pa.array(reps["rep"] & _ROW_MASK)).combine_chunks()
    dest = _shard_of(reps["gid"])
    blocks = {}
    for to in np.unique(dest).tolist():
        rows = np.flatnonzero(dest == to)
        data, lengths = encode_strings(rep_ids.take(pa.array(rows)))
        blocks[to] = {"gid": reps["gid"][rows], "near": reps["near"][rows], "rep_id_data": data,
                      "rep_id_lengths": lengths}
    write_blocks(work, "drops", shard, blocks)
