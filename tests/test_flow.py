"""End to end: the whole flow on the shipped sample corpus under a Prefect test harness."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLE

FAST = ["train.max_steps=30", "train.eval_every=30", "train.batch_size=8", "tokenize.vocab_size=600",
        "evaluate.max_new_tokens=20"]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_end_to_end(harness, tmp_path: Path, mlflow_store: str, monkeypatch):
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client

    from flows.corpus_to_model import FlowParams, corpus_to_model
    from pipeline.manifest import read_manifest
    from pipeline.tracking import configure

    monkeypatch.chdir(tmp_path)
    shutil.copytree(SAMPLE, tmp_path / "corpus")
    params = FlowParams(preset="tiny", sources=["corpus"], overrides=FAST)
    t0 = time.perf_counter()
    result = corpus_to_model(params)
    first = time.perf_counter() - t0
    assert result["version"] == 1 and result["champion"] and len(result["samples"]) == 3

    run = Path(result["run_dir"])
    stages = ["ingest", "clean", "filter", "tokenize", "train", "evaluate", "register"]
    manifests = {s: read_manifest(run / s / "manifest.json") for s in stages}
    for s in ("ingest", "clean", "filter"):
        st = manifests[s].stats
        assert st["docs_in"] == st["docs_kept"] + sum(st["dropped"].values())
    assert (run / "train" / "checkpoint" / "model.safetensors").exists()

    configure()
    client = MlflowClient()
    mv = client.get_model_version_by_alias("quill", "champion")
    assert mv.version == "1" and client.get_model_version_by_alias("quill", "challenger").version == "1"
    mlrun = client.get_run(mv.run_id)
    assert "val/bpb" in mlrun.data.metrics and "eval/val_bpb" in mlrun.data.metrics
    assert mlrun.data.tags["prefect.flow_run_id"]
    arts = {a.path for a in client.list_artifacts(mv.run_id)}
    assert {"manifests", "evaluation", "plots"} <= arts

    # Rerun with nothing changed: every stage skipped, the same version, no duplicate.
    result2 = corpus_to_model(params)
    assert result2["version"] == 1
    assert all(read_manifest(run / s / "manifest.json").created_at == manifests[s].created_at for s in stages)
    assert len(client.search_model_versions("name='quill'")) == 1

    # Only the training config changes: data stages are reused, train/evaluate/register rerun.
    params3 = FlowParams(preset="tiny", sources=["corpus"], overrides=FAST + ["train.lr=0.002"])
    result3 = corpus_to_model(params3)
    assert result3["version"] == 2
    for s in ("ingest", "clean", "filter", "tokenize"):
        assert read_manifest(run / s / "manifest.json").created_at == manifests[s].created_at
    assert read_manifest(run / "train" / "manifest.json").created_at != manifests["train"].created_at
    assert client.get_model_version_by_alias("quill", "challenger").version == "2"

    async def artifact_keys():
        async with get_client() as c:
            return {a.key for a in await c.read_artifacts()}

    import asyncio

    keys = asyncio.run(artifact_keys())
    assert {"mlflow-run", "ingest-report", "filter-report", "evaluation-report"} <= keys
    print(f"first run {first:.1f}s")
