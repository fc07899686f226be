"""Dedup spread over shards and partitions finds exactly the duplicates, and names exactly the
representatives, that the single-process grouping over the whole corpus finds."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import DedupConfig
from pipeline.dedup_steps import _components, _send_edges, drop_list, find_duplicates
from pipeline.io.executor import open_executor, run_shards
from pipeline.io.partfiles import DESTS_PER_FILE, decode_strings, encode_strings, read_parts, write_blocks, write_parts
from pipeline.text.dedup import MinHasher, bucket_pairs, exact_keys, near_duplicate_groups
from pipeline.text.wordarrays import WordArrays

VOCAB = [f"w{i}" for i in range(400)]


def reference(keys: np.ndarray, signatures: np.ndarray, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """The single-process dedup the filter ran before it was spread over shards: (representative, near) per
    document, the representative being itself when it is kept."""
    n = len(keys)
    rep = np.arange(n)
    if cfg.exact and n:
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        rep = first[inverse.reshape(-1)]
    near = np.zeros(n, dtype=bool)
    if cfg.near:
        remaining = np.flatnonzero(rep == np.arange(n))
        for dropped, to in near_duplicate_groups(signatures[remaining], cfg.bands, cfg.threshold).items():
            rep[remaining[dropped]], near[remaining[dropped]] = remaining[to], True
    return rep, near


def planted_corpus(seed: int, n_docs: int) -> list[str]:
    """Random documents with planted duplicates: near-duplicate chains (each link a few words off the
    previous one, so the ends of a long chain are not similar), exact copies that differ in case and
    punctuation, a crowd of short near-identical documents (an LSH bucket above 64) and empty ones."""
    rng = random.Random(seed)
    docs: list[str] = []
    while len(docs) < n_docs:
        kind = rng.random()
        if kind < 0.45 or not docs:
            docs.append(" ".join(rng.choices(VOCAB, k=rng.randint(3, 120))))
        elif kind < 0.75:  # a chain of small edits
            words = rng.choice(docs).split() or ["x"]
            for _ in range(rng.randint(1, 6)):
                words = list(words)
                for _ in range(max(1, len(words) // rng.choice([12, 20, 40]))):
                    words[rng.randrange(len(words))] = rng.choice(VOCAB)
                docs.append(" ".join(words))
        elif kind < 0.9:  # an exact copy, in other case and punctuation
            docs.append(rng.choice(docs).upper().replace(" ", ", ", 1))
        elif kind < 0.93:  # many short documents sharing most shingles
            stem = " ".join(rng.choices(VOCAB, k=30))
            docs += [f"{stem} {rng.choice(VOCAB)}" for _ in range(rng.randint(60, 90))]
        else:
            docs.append(rng.choice(["", "!!", "   "]))
    order = list(range(len(docs)))
    rng.shuffle(order)  # duplicates in any shard, before or after their original
    return [docs[i] for i in order]


def write_shards(stage_dir: Path, texts: list[str], n_shards: int, cfg: DedupConfig) -> list[dict]:
    """What pass 1 leaves per shard: the survivors' dedup arrays and their scratch docs (ids)."""
    words = WordArrays.from_texts(texts)
    keys, sigs = exact_keys(words), MinHasher(cfg.num_perm, cfg.shingle_size).signatures(words)
    cuts = np.sort(np.random.default_rng(len(texts)).choice(np.arange(1, len(texts)), n_shards - 1, replace=False))
    shards = []
    for i, (a, b) in enumerate(zip(np.r_[0, cuts], np.r_[cuts, len(texts)])):
        (stage_dir / "s").mkdir(parents=True, exist_ok=True)
        np.savez(stage_dir / "s" / f"dedup_{i}.npz", keys=keys[a:b], signatures=sigs[a:b])
        pq.write_table(pa.table({"id": [f"doc{j}" for j in range(a, b)]}), stage_dir / "s" / f"docs_{i}.parquet")
        shards.append({"dedup": f"s/dedup_{i}.npz", "scratch": [f"s/docs_{i}.parquet"]})
    return shards, keys, sigs


def distributed(stage_dir: Path, shards: list[dict], cfg: DedupConfig, executor="local") -> dict[int, tuple[str, str]]:
    """{document number: (reason, detail)} from the dedup steps."""
    with open_executor(executor, len(shards), 2) as pool:
        find_duplicates(stage_dir / "work", stage_dir, shards, cfg, lambda fn, jobs: run_shards(fn, jobs, pool))
    found, first = {}, 0
    for i, shard in enumerate(shards):
        drops = drop_list(stage_dir / "work", i)
        assert np.all(np.diff(drops["rows"]) > 0), "each duplicate once, in row order"
        found |= {first + int(r): (why, detail) for r, why, detail in zip(drops["rows"], drops["reasons"],
                                                                           drops["details"])}
        first += len(np.load(stage_dir / shard["dedup"])["keys"])
    return found


def expected(keys, sigs, cfg) -> dict[int, tuple[str, str]]:
    rep, near = reference(keys, sigs, cfg)
    return {i: ("near_duplicate" if near[i] else "exact_duplicate", f"duplicate of doc{rep[i]}")
            for i in np.flatnonzero(rep != np.arange(len(rep))).tolist()}


CONFIGS = [DedupConfig(), DedupConfig(num_perm=60, bands=7, threshold=0.6), DedupConfig(exact=False),
           DedupConfig(near=False), DedupConfig(num_perm=32, bands=32, threshold=0.5, shingle_size=2)]


@pytest.mark.parametrize("seed", [*range(3), *(pytest.param(s, marks=pytest.mark.slow) for s in range(3, 12))])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "uneven-bands", "near-only", "exact-only", "loose"])
def test_same_duplicates_and_representatives_as_the_single_process_grouping(tmp_path, seed, cfg):
    texts = planted_corpus(seed, 300 + 60 * seed)
    shards, keys, sigs = write_shards(tmp_path, texts, 1 + seed % 5, cfg)
    want = expected(keys, sigs, cfg)
    if cfg.exact:
        assert any(r == "exact_duplicate" for r, _ in want.values())
    if cfg.near:
        assert sum(r == "near_duplicate" for r, _ in want.values()) > 10, "the corpus plants near duplicates"
    assert distributed(tmp_path, shards, cfg) == want


def test_long_chains_and_a_crowded_bucket_are_one_cluster_each(tmp_path):
    """A chain whose ends are not similar still forms one cluster named by its first document, however its
    links are spread over shards; a bucket of over 64 members is paired linearly, as before."""
    rng = random.Random(7)
    words = rng.choices(VOCAB, k=200)
    chain = []
    for _ in range(40):
        words = list(words)
        words[rng.randrange(len(words))] = rng.choice(VOCAB)
        chain.append(" ".join(words))
    stem = " ".join(rng.choices(VOCAB, k=25))
    crowd = [f"{stem} {w}" for w in rng.sample(VOCAB, 100)]
    texts = chain[::2] + crowd + chain[1::2]
    cfg = DedupConfig()
    shards, keys, sigs = write_shards(tmp_path, texts, 7, cfg)
    want = expected(keys, sigs, cfg)
    assert {d for _, d in want.values()} >= {"duplicate of doc0"}
    assert distributed(tmp_path, shards, cfg) == want


def test_process_pool_finds_the_same(tmp_path):
    cfg = DedupConfig()
    shards, keys, sigs = write_shards(tmp_path, planted_corpus(11, 400), 4, cfg)
    assert distributed(tmp_path, shards, cfg, executor="processes") == expected(keys, sigs, cfg)


def test_bucket_pairs_all_pairs_up_to_64_then_first_and_previous():
    members = np.arange(100, dtype=np.int64)
    a, b = bucket_pairs(np.array([0, 10]), np.array([3, 80]), members)
    pairs = set(zip(a.tolist(), b.tolist()))
    assert {(0, 1), (0, 2), (1, 2)} <= pairs and (10, 79) in pairs and (78, 79) in pairs and (11, 79) not in pairs
    assert len(pairs) == len(a) == 3 + 2 * 69 - 1


def test_partition_files_route_rows_and_strings(tmp_path):
    write_parts(tmp_path, "x", 1, np.array([2, 0, 2]), {"v": np.array([10, 11, 12])})
    write_parts(tmp_path, "x", 0, np.array([2]), {"v": np.array([9])})
    assert read_parts(tmp_path, "x", 2)["v"].tolist() == [9, 10, 12] and read_parts(tmp_path, "x", 1) is None
    strings = ["", "ü", "doc-7", "漢字"]
    assert decode_strings(*encode_strings(pa.array(strings).slice(1))) == strings[1:]
    for source, part in enumerate([strings[:2], strings[2:]]):  # files of several sources concatenate
        data, lengths = encode_strings(part)
        write_blocks(tmp_path, "s", source, {0: {"data": data, "lengths": lengths}, 1: {"data": data[:0],
                                                                                        "lengths": lengths[:0]}})
    both = read_parts(tmp_path, "s", 0)
    assert decode_strings(both["data"], both["lengths"]) == strings
    assert decode_strings(*read_parts(tmp_path, "s", 1).values()) == []


def test_partition_files_hold_a_group_of_destinations_each_reader_reads_its_own(tmp_path):
    dest = np.arange(3 * DESTS_PER_FILE) % (2 * DESTS_PER_FILE + 3)
    write_parts(tmp_path, "x", 4, dest, {"v": np.arange(len(dest)), "w": np.arange(len(dest))[:, None] * [1, -1]})
    assert len(list((tmp_path / "x").rglob("*.part"))) == 3, "one file per group of DESTS_PER_FILE destinations"
    for d in range(2 * DESTS_PER_FILE + 4):
        got = read_parts(tmp_path, "x", d)
        rows = np.flatnonzero(dest == d)
        if not len(rows):
            assert got is None
        else:
            assert got["v"].tolist() == rows.tolist() and got["w"].tolist() == [[r, -r] for r in rows]
    with pytest.raises(TypeError, match="plain arrays"):
        write_parts(tmp_path, "y", 0, np.array([0]), {"o": np.array([{"x": 1}], dtype=object)})


def union_find_roots(a: list[int], b: list[int]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for x, y in zip(a, b):
        rx, ry = find(x), find(y)
        parent[max(rx, ry)] = min(rx, ry)
    return {x: find(x) for x in parent if find(x) != x}


@pytest.mark.parametrize("seed", range(4))
def test_star_rounds_find_every_component_and_its_lowest_member(tmp_path, seed):
    """Long paths (the worst case for label propagation), random trees, cycles and pairs, nodes numbered at
    random over 3 partitions: every node ends pointing at the lowest node of its component."""
    rng = np.random.default_rng(seed)
    nodes = rng.choice(1 << 40, size=900, replace=False).astype(np.int64)
    edges = [(nodes[i], nodes[i + 1]) for i in range(299)]  # a path
    edges += [(nodes[300 + i], nodes[300 + rng.integers(0, i)]) for i in range(1, 300)]  # a random tree
    edges += [(nodes[600 + i], nodes[600 + (i + 1) % 100]) for i in range(100)]  # a cycle
    edges += [(nodes[700 + 2 * i], nodes[701 + 2 * i]) for i in range(100)]  # pairs
    a, b = np.array([min(e) for e in edges]), np.array([max(e) for e in edges])
    _send_edges(tmp_path, "cc0", 0, a, b, 3, to_both=True)
    _components(tmp_path, {"work": str(tmp_path), "n_parts": 3}, lambda fn, jobs: [fn(job) for job in jobs])
    found = {}
    for shard in np.unique(a >> 32).tolist():
        reps = read_parts(tmp_path, "near_reps", shard)
        if reps is not None:
            assert len(set(reps["gid"].tolist()) & found.keys()) == 0, "each node once"
            found |= dict(zip(reps["gid"].tolist(), reps["rep"].tolist()))
    assert found == union_find_roots(a.tolist(), b.tolist())
