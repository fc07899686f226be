"""Work split by shard gives the same bytes wherever it runs: in-process, a process pool, Dask."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.clean import clean
from pipeline.config import CleanConfig, FilterConfig, IngestConfig
from pipeline.filter import filter_docs
from pipeline.ingest import ingest
from pipeline.io.docshards import iter_docs
from pipeline.text.dedup import MinHasher, exact_key, exact_keys
from pipeline.text.wordarrays import WordArrays
from tests.conftest import SAMPLE
from tests.test_dedup_steps import reference


@pytest.fixture(scope="module")
def sharded_clean(tmp_path_factory):
    """The sample corpus in 5 docs shards, cleaned: duplicates sit in different shards."""
    run = tmp_path_factory.mktemp("scale") / "run"
    ing = ingest([str(SAMPLE)], run / "ingest", IngestConfig(shard_docs=40))
    assert len(ing.output_list("docs")) == 5
    return clean(ing.path, run / "clean", CleanConfig(executor="local"))


@pytest.fixture(scope="module")
def local_filter(sharded_clean, tmp_path_factory):
    cfg = FilterConfig(executor="local", audit={"counterfactual": True})
    return filter_docs(sharded_clean.path, tmp_path_factory.mktemp("local") / "filter", cfg)


def _files(m) -> dict[str, bytes]:
    """Every data file and the report of a stage folder, by relative path."""
    return {p.relative_to(m.stage_dir).as_posix(): p.read_bytes() for p in sorted(m.stage_dir.rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".md")}


def _same_output(a, b) -> None:
    assert _files(a).keys() == _files(b).keys()
    assert _files(a) == _files(b), "byte-identical Parquet shards and report"
    assert a.stats == b.stats and a.outputs == b.outputs and a.config_hash == b.config_hash


def test_sharded_filter_matches_the_single_shard_result(local_filter):
    local = local_filter
    drop = local.stats["dropped"]
    assert drop["exact_duplicate"] == 5 and drop["near_duplicate"] == 5 and drop["offensive"] == 6, "dedup spans shards"
    assert local.stats["docs_kept"] == 151 and local.stats["docs_added"]["counterfactual"] > 0
    assert len(local.output_list("docs")) == 10, "per input shard: kept docs and gender-swapped copies"
    s = local.stats
    assert s["docs_in"] == s["docs_kept"] + sum(s["dropped"].values())


def test_each_duplicate_names_the_first_of_its_cluster(sharded_clean, local_filter):
    order = [d["id"] for d in iter_docs(sharded_clean.output_list("docs"))]  # shard order: first comes first
    kept = {d["id"]: d["text"] for d in iter_docs(local_filter.output_list("docs"))}
    dups = [r for p in local_filter.output_list("excluded") for r in pq.read_table(p).to_pylist()
            if r["reason"].endswith("_duplicate")]
    assert len(dups) == 10
    for row in dups:
        rep = row["detail"].removeprefix("duplicate of ")
        assert rep in kept and order.index(rep) < order.index(row["id"]), row
        if row["reason"] == "exact_duplicate":
            assert exact_key(kept[rep]) == exact_key(row["text"]), row
        else:
            assert exact_key(kept[rep]) != exact_key(row["text"]), row


def test_process_pool_gives_identical_bytes(sharded_clean, local_filter, tmp_path: Path):
    cfg = local_filter.config | {"executor": "processes", "num_workers": 2}
    pool = filter_docs(sharded_clean.path, tmp_path / "pool" / "filter", FilterConfig.model_validate(cfg))
    _same_output(local_filter, pool)
    ingest_manifest = Path(sharded_clean.inputs[0].path)
    again = clean(ingest_manifest, tmp_path / "pool" / "clean", CleanConfig(executor="processes", num_workers=2))
    _same_output(sharded_clean, again)
    again = clean(sharded_clean.inputs[0].path, tmp_path / "pool" / "clean",
                  CleanConfig(executor="processes", num_workers=2))
    assert _files(again) == _files(sharded_clean)


# Thread workers by default (2 s); process workers (they import the pipeline, ~15 s here) run with -m slow.
@pytest.mark.parametrize("processes", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_dask_cluster_gives_identical_bytes(sharded_clean, local_filter, tmp_path: Path, processes: bool):
    distributed = pytest.importorskip("distributed",
                                      reason="dask.distributed (the optional 'dask' extra) is not installed")
    cfg = FilterConfig.model_validate(local_filter.config | {"executor": "dask"})
    with (distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=processes,
                                   dashboard_address=None) as cluster,
          distributed.Client(cluster)):
        on_dask = filter_docs(sharded_clean.path, tmp_path / "dask" / "filter", cfg)
        assert len(cluster.scheduler_info["workers"]) == 2
    _same_output(local_filter, on_dask)


# --- dedup over shards and partitions: the same decisions as the single-process grouping -----------

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
CORPORA = {  # sources under the corpus folder, ingest (shard sizes for 4 to 30 shards) and filter overrides
    "gutenberg_creative": (["*.txt"], {"shard_docs": 100}, {"quality": {"profile": "prose"}}),  # 418 works
    "c4_sample": (["*.gz"], {"shard_docs": 10}, {"quality": {"profile": "web"}}),
    "dclm_web_noisy": (["majority_data.jsonl"], {"shard_docs": 100}, {"quality": {"profile": "web"}}),
    "tinystories_sample": (["tinystories_train_head1000.txt"], {"split": "line", "shard_docs": 200}, {}),
    "chinese_poetry": (["quantangshi_*.json", "tangshi_300.json"], {"text_field": "paragraphs", "shard_docs": 500},
                       {"quality": {"profile": "poetry"}}),
}


def reference_duplicates(clean_manifest, filtered) -> dict[str, tuple[str, str]]:
    """{id: (reason, detail)} that the single-process dedup (`tests.test_dedup_steps.reference`) gives on the
    documents that reached dedup (the kept ones and the duplicates), in corpus order."""
    cfg = FilterConfig.model_validate(filtered.config).dedup
    order = [d["id"] for d in iter_docs(clean_manifest.output_list("docs"))]
    assert len(set(order)) == len(order), "ids are unique"
    texts = {d["id"]: d["text"] for d in iter_docs([p for p in filtered.output_list("docs")
                                                    if Path(p).name.startswith("docs_")])}
    texts |= {r["id"]: r["text"] for r in found_duplicates(filtered, with_text=True).values()}
    survivors = [i for i in order if i in texts]
    words = WordArrays.from_texts([texts[i] for i in survivors])
    rep, near = reference(exact_keys(words), MinHasher(cfg.num_perm, cfg.shingle_size).signatures(words), cfg)
    return {survivors[i]: ("near_duplicate" if near[i] else "exact_duplicate", f"duplicate of {survivors[rep[i]]}")
            for i in range(len(survivors)) if rep[i] != i}


def found_duplicates(filtered, with_text: bool = False) -> dict:
    rows = [r for p in filtered.output_list("excluded") for r in pq.read_table(p).to_pylist()
            if r["reason"].endswith("_duplicate")]
    return {r["id"]: r if with_text else (r["reason"], r["detail"]) for r in rows}


def test_duplicates_are_those_of_the_single_process_grouping(sharded_clean, local_filter):
    want = reference_duplicates(sharded_clean, local_filter)
    assert len(want) == 10 and found_duplicates(local_filter) == want


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CORPORA))
def test_shared_corpora_dedup_as_before_locally_and_on_dask(name, tmp_path: Path):
    folder = SHARED / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (see ../shared/corpora/README.md)")
    distributed = pytest.importorskip("distributed", reason="dask.distributed (the 'dask' extra) is not installed")
    globs, ingest_over, filter_over = CORPORA[name]
    sources = sorted(str(p) for g in globs for p in folder.glob(g))
    ing = ingest(sources, tmp_path / "ingest", IngestConfig(**ingest_over))
    cleaned = clean(ing.path, tmp_path / "clean", CleanConfig(executor="local"))
    assert len(cleaned.output_list("docs")) > 1, "several shards: duplicates across them"
    local = filter_docs(cleaned.path, tmp_path / "local" / "filter", FilterConfig(executor="local", **filter_over))
    assert found_duplicates(local) == reference_duplicates(cleaned, local)
    with (distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                   dashboard_address=None) as cluster, distributed.Client(cluster)):
        on_dask = filter_docs(cleaned.path, tmp_path / "dask" / "filter", FilterConfig(executor="dask", **filter_over))
    _same_output(local, on_dask)
