"""Registration: gate cases, alias moves, idempotency, pyfunc load + predict round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.register import gate


@pytest.mark.parametrize(
    "candidate, champion, margin, promote",
    [
        (2.0, None, 0.0, True),    # first model
        (1.9, 2.0, 0.05, True),    # better by more than the margin
        (2.1, 2.0, 0.0, False),    # worse
        (1.98, 2.0, 0.05, False),  # better, but within the margin
        (2.0, 2.0, 0.0, False),    # equal
    ],
)
def test_gate(candidate, champion, margin, promote):
    assert gate(candidate, champion, margin)[0] is promote


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, corpus_dir_module):
    """ingest -> tokenize -> train (a few steps) -> evaluate on the small fixture corpus."""
    from pipeline.config import EvaluateConfig, IngestConfig, ModelConfig, TokenizeConfig, TrainConfig
    from pipeline.evaluate import evaluate
    from pipeline.ingest import ingest
    from pipeline.tokenize import tokenize
    from pipeline.train import train

    run = tmp_path_factory.mktemp("reg") / "run"
    m = ingest([str(corpus_dir_module)], run / "ingest", IngestConfig())
    m = tokenize(m.path, run / "tokenize", TokenizeConfig(vocab_size=400, val_fraction=0.2))
    m = train(m.path, run / "train", TrainConfig(max_steps=4, batch_size=4, eval_every=4, warmup_steps=1),
              ModelConfig(block_size=32, n_layer=1, n_head=2, n_embd=32))
    return evaluate(m.path, run / "evaluate", EvaluateConfig(max_new_tokens=8))


def _variant(eval_m, tmp: Path, bpb: float) -> Path:
    """A copy of the evaluation with another val_bpb (a different model, as the gate sees it)."""
    dst = tmp / f"eval_{bpb}" / "evaluate"
    shutil.copytree(eval_m.stage_dir, dst)
    data = json.loads((dst / "manifest.json").read_text())
    data["stats"]["val_bpb"] = bpb
    (dst / "manifest.json").write_text(json.dumps(data))
    return dst / "manifest.json"


def test_registry_aliases_and_idempotency(evaluated, tmp_path: Path, mlflow_store):
    from mlflow import MlflowClient

    from pipeline.config import RegisterConfig
    from pipeline.register import register
    from pipeline.tracking import configure

    cfg = RegisterConfig(margin=0.01)
    configure()
    client = MlflowClient()
    base = evaluated.stats["val_bpb"]
    first = _variant(evaluated, tmp_path, base)
    r1 = register(first, tmp_path / "r1" / "register", cfg).stats
    assert r1["version"] == 1 and r1["champion"]
    again = register(first, tmp_path / "r1b" / "register", cfg).stats  # another folder, same evaluation
    assert again["version"] == 1 and len(client.search_model_versions("name='quill'")) == 1

    worse = register(_variant(evaluated, tmp_path, base + 0.5), tmp_path / "r2" / "register", cfg).stats
    assert worse["version"] == 2 and not worse["champion"]
    assert client.get_model_version_by_alias("quill", "champion").version == "1"
    assert client.get_model_version_by_alias("quill", "challenger").version == "2"
    assert client.get_model_version("quill", "2").tags["gate.decision"] == "kept_champion"

    better = register(_variant(evaluated, tmp_path, base - 0.5), tmp_path / "r3" / "register", cfg).stats
    assert better["champion"] and client.get_model_version_by_alias("quill", "champion").version == "3"


def test_pyfunc_round_trip(evaluated, tmp_path: Path, mlflow_store):
    import mlflow
    import pandas as pd

    from pipeline.config import RegisterConfig
    from pipeline.register import register
    from pipeline.tracking import configure, download_checkpoint

    register(evaluated.path, tmp_path / "register", RegisterConfig())
    configure()
    model = mlflow.pyfunc.load_model("models:/quill@champion")
    params = {"max_new_tokens": 5, "seed": 3, "strategy": "greedy"}
    out = model.predict(pd.DataFrame({"prompt": ["Once upon", "The sea"]}), params=params)
    assert len(out) == 2 and out[0].startswith("Once upon") and out[1].startswith("The sea")
    assert out == model.predict(pd.DataFrame({"prompt": ["Once upon", "The sea"]}), params=params)
    assert (download_checkpoint("models:/quill@champion") / "tokenizer.model").exists()
