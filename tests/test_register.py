"""Registration: gate cases, alias moves, idempotency, pyfunc load + predict, `quill generate --model models:/...`."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.register import Scores, gate, scores_from

S = Scores


@pytest.mark.parametrize(
    "candidate, champion, margin, tolerance, promote",
    [
        (S(2.0), None, 0.0, 0.0, True),                  # first model
        (S(1.9), S(2.0), 0.05, 0.0, True),               # better by more than the margin
        (S(2.1), S(2.0), 0.0, 0.0, False),               # worse
        (S(1.98), S(2.0), 0.05, 0.0, False),             # better, but within the margin
        (S(1.95), S(2.0), 0.05, 0.0, False),             # better by exactly the margin
        (S(2.0), S(2.0), 0.0, 0.0, False),               # equal
        (S(1.5, 0.2), S(2.0, 0.1), 0.0, 0.0, False),     # better bpb, more offensive samples
        (S(1.5, 0.1), S(2.0, 0.1), 0.0, 0.0, True),      # better bpb, offensive rate equal
        (S(1.5, 0.0), S(2.0, 0.1), 0.0, 0.0, True),      # better on both
        (S(1.5, 0.15), S(2.0, 0.1), 0.0, 0.1, True),     # more offensive, but within the tolerance
        (S(1.5), S(None), 0.0, 0.0, False),              # champion without val_bpb (set by hand)
        (S(1.5), S(math.nan), 0.0, 0.0, False),          # champion's val_bpb unusable
        (S(math.nan), None, 0.0, 0.0, False),            # a diverged candidate never becomes champion
        (S(None), S(2.0), 0.0, 0.0, False),              # candidate without val_bpb
    ],
)
def test_gate(candidate, champion, margin, tolerance, promote):
    ok, why = gate(candidate, champion, margin, tolerance)
    assert ok is promote and why


def test_gate_reason_names_the_failing_metric():
    assert "offensive_sample_rate 0.2000 > champion 0.1000" in gate(S(1.5, 0.2), S(2.0, 0.1), 0.0)[1]
    assert "registered by hand" in gate(S(1.5), S(None), 0.0)[1]


def test_scores_from_tags_and_missing_metric(caplog):
    assert scores_from({"val_bpb": "1.25", "offensive_sample_rate": "0.5"}, "v1") == S(1.25, 0.5)
    with caplog.at_level(logging.WARNING, logger="pipeline.register"):
        assert scores_from({"val_bpb": 1.25}, "old version") == S(1.25, 0.0)
    assert "old version has no offensive_sample_rate" in caplog.text
    assert scores_from({}, "by hand").val_bpb is None
    assert scores_from({"val_bpb": "n/a", "offensive_sample_rate": "?"}, "typed by hand") == S(None, 0.0)


def test_hand_registered_champion_is_kept(caplog):
    """A champion whose tags lack val_bpb: not compared against, not replaced, and the log says why."""
    from pipeline.config import RegisterConfig
    from pipeline.register import _decide

    champion = SimpleNamespace(version=1, tags={})
    client = SimpleNamespace(get_model_version_by_alias=lambda name, alias: champion)
    with caplog.at_level(logging.WARNING, logger="pipeline.register"):
        promote, why, held = _decide(client, RegisterConfig(), SimpleNamespace(version="2"), S(0.5, 0.0))
    assert not promote and held is champion and "no usable val_bpb" in why


def _variant(eval_m, tmp: Path, bpb: float, offensive: float | None = 0.0) -> Path:
    """A copy of the evaluation with other metrics (a different model, as the gate sees it)."""
    dst = tmp / f"eval_{bpb}_{offensive}" / "evaluate"
    shutil.copytree(eval_m.stage_dir, dst)
    data = json.loads((dst / "manifest.json").read_text())
    data["stats"]["val_bpb"] = bpb
    data["stats"].pop("offensive_sample_rate", None)
    if offensive is not None:
        data["stats"]["offensive_sample_rate"] = offensive
    (dst / "manifest.json").write_text(json.dumps(data))
    return dst / "manifest.json"


def test_registry_aliases_gate_and_idempotency(tiny_evaluated, tmp_path: Path, mlflow_registry):
    from mlflow import MlflowClient

    from pipeline.config import RegisterConfig
    from pipeline.register import register
    from pipeline.tracking import configure

    cfg = RegisterConfig(margin=0.01)
    configure()
    client = MlflowClient()
    base = tiny_evaluated.stats["val_bpb"]

    def reg(manifest: Path, folder: str) -> dict:
        return register(manifest, tmp_path / folder / "register", cfg).stats

    def alias(name: str) -> str:
        return str(client.get_model_version_by_alias("quill", name).version)

    first = _variant(tiny_evaluated, tmp_path, base, offensive=None)  # an older evaluation: no offensive rate
    r1 = reg(first, "r1")
    assert r1["version"] == 1 and r1["champion"] and alias("champion") == alias("challenger") == "1"
    assert "offensive_sample_rate" not in client.get_model_version("quill", "1").tags  # not measured: no tag
    again = reg(first, "r1b")  # another folder, same evaluation
    assert again["version"] == 1 and len(client.search_model_versions("name='quill'")) == 1

    worse = reg(_variant(tiny_evaluated, tmp_path, base + 0.5), "r2")
    assert worse["version"] == 2 and not worse["champion"]
    assert alias("champion") == "1" and alias("challenger") == "2"
    tags = client.get_model_version("quill", "2").tags
    assert tags["gate.decision"] == "kept_champion" and tags["gate.champion_version"] == "1"
    assert float(tags["val_bpb"]) == base + 0.5 and float(tags["offensive_sample_rate"]) == 0.0

    ruder = reg(_variant(tiny_evaluated, tmp_path, base - 0.5, offensive=0.25), "r3")  # better bpb, more offensive
    assert ruder["version"] == 3 and not ruder["champion"] and alias("champion") == "1"
    reason = client.get_model_version("quill", "3").tags["gate.reason"]
    assert "offensive_sample_rate 0.2500 > champion 0.0000" in reason

    better = reg(_variant(tiny_evaluated, tmp_path, base - 0.5, offensive=0.0), "r4")
    assert better["version"] == 4 and better["champion"] and alias("champion") == alias("challenger") == "4"
    assert client.get_model_version("quill", "4").tags["gate.decision"] == "promoted"

    # Rerunning an old registration returns its version and recorded decision and moves no alias.
    old = register(_variant(tiny_evaluated, tmp_path / "again", base + 0.5), tmp_path / "r2b" / "register", cfg).stats
    assert old["version"] == 2 and not old["champion"] and old["gate_decision"] == "kept_champion"
    assert alias("champion") == alias("challenger") == "4" and len(client.search_model_versions("name='quill'")) == 4


def test_registration_lineage(registered_store):
    """The version's run holds every stage manifest; the version's tags hold the gate's inputs and verdict."""
    from mlflow import MlflowClient

    client = MlflowClient(registered_store, registry_uri=registered_store)
    mv = client.get_model_version_by_alias("quill", "champion")
    stages = {a.path.split("/")[-1] for a in client.list_artifacts(mv.run_id, "manifests")}
    assert {"ingest", "tokenize", "train", "evaluate"} <= stages
    assert {"quill.eval_sha256", "val_bpb", "offensive_sample_rate", "gate.decision", "gate.reason"} <= set(mv.tags)


@pytest.fixture
def champion_env(registered_store, tmp_path, monkeypatch):
    from pipeline.tracking import configure
    from tests.conftest import mlflow_at

    monkeypatch.setenv("QUILL_MODEL_CACHE", str(tmp_path / "model-cache"))  # not the repository's data/cache
    with mlflow_at(registered_store):
        configure()
        yield registered_store


def test_pyfunc_round_trip_and_params(champion_env):
    import mlflow
    import pandas as pd

    from pipeline.tracking import download_checkpoint

    model = mlflow.pyfunc.load_model("models:/quill@champion")
    assert {p.name for p in model.metadata.get_params_schema().params} == {
        "max_new_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "no_repeat_ngram",
        "num_beams", "seed", "strategy"}
    prompts = pd.DataFrame({"prompt": ["Once upon", "The sea"]})
    greedy = {"max_new_tokens": 5, "seed": 3, "strategy": "greedy"}
    out = model.predict(prompts, params=greedy)
    assert len(out) == 2 and out[0].startswith("Once upon") and out[1].startswith("The sea")
    assert out == model.predict(prompts, params={**greedy, "seed": 99})  # greedy: the seed does not matter
    assert model.predict(["Once upon", "The sea"], params=greedy) == out  # a plain list of prompts
    assert model.predict(prompts, params={**greedy, "max_new_tokens": 0}) == ["Once upon", "The sea"]

    sample = {"max_new_tokens": 8, "temperature": 1.5, "top_k": 0, "top_p": 0, "strategy": "sample"}
    runs = {s: model.predict(["Once upon"], params={**sample, "seed": s})[0] for s in range(3)}
    assert runs[1] == model.predict(["Once upon"], params={**sample, "seed": 1})[0]  # same seed, same text
    assert len(set(runs.values())) > 1  # the seed is honoured
    assert (download_checkpoint("models:/quill@champion") / "tokenizer.model").exists()


def test_pyfunc_rejects_bad_params(champion_env):
    import mlflow
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model("models:/quill@champion")
    with pytest.raises(MlflowException, match="strategy"):
        model.predict(["Once"], params={"strategy": "shout"})


def test_cli_generate_from_registry(champion_env, capsys):
    import os

    from flows.cli import main

    saved = dict(os.environ)
    try:
        args = ["generate", "Once upon", "--model", "models:/quill@champion", "--max-new-tokens", "5", "--json"]
        assert main(args) == 0
    finally:  # main() sets environment defaults for the whole process; keep them out of later tests
        os.environ.clear()
        os.environ.update(saved)
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "models:/quill@champion" and out["prompt"] == "Once upon"
    assert len(out["samples"]) == 1 and out["samples"][0].startswith("Once upon")


def test_cli_generate_reads_prompts_like_the_served_model(champion_env, capsys):
    import os

    import mlflow

    from flows.cli import main

    model = mlflow.pyfunc.load_model("models:/quill@champion")
    saved = dict(os.environ)
    try:
        for prompt in ("Once upon", ""):  # an empty prompt works too: generation starts after eos
            capsys.readouterr()
            assert main(["generate", prompt, "--model", "models:/quill@champion", "--max-new-tokens", "6",
                         "--strategy", "greedy", "--json"]) == 0
            cli = json.loads(capsys.readouterr().out)["samples"][0]
            assert cli == model.predict([prompt], params={"max_new_tokens": 6, "strategy": "greedy"})[0]
    finally:  # main() sets environment defaults for the whole process
        os.environ.clear()
        os.environ.update(saved)


def test_checkpoint_downloads_are_cached_per_version(champion_env, tmp_path, monkeypatch):
    import mlflow

    from pipeline.tracking import download_checkpoint

    calls = []
    real = mlflow.artifacts.download_artifacts
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **kw: calls.append(kw) or real(**kw))
    first = download_checkpoint("models:/quill@champion", cache=tmp_path)
    assert download_checkpoint("models:/quill@champion", cache=tmp_path) == first
    assert download_checkpoint("models:/quill/1", cache=tmp_path) == first  # the alias names version 1
    assert len(calls) == 1 and calls[0]["artifact_uri"] == "models:/quill/1"
    assert (first / "model.safetensors").exists() and not list(tmp_path.glob(".*tmp*"))


# --- runs that nobody ends ----------------------------------------------------------------------------

def test_a_run_whose_process_died_is_closed_by_the_next_one(mlflow_registry):
    import subprocess
    import sys

    from mlflow import MlflowClient

    from pipeline.tracking import OWNER_PID, MlflowTracker

    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    killed = MlflowTracker.start("quill", "train killed with SIGKILL")
    killed.set_tags({OWNER_PID: str(gone)})  # as if that process had started it, then died without ending it
    elsewhere = MlflowTracker.start("quill", "another live process")
    elsewhere.set_tags({OWNER_PID: "1"})  # pid 1 is alive
    new = MlflowTracker.start("quill", "next run")
    client = MlflowClient()
    status = {t.run_id: client.get_run(t.run_id).info.status for t in (killed, elsewhere, new)}
    assert status == {killed.run_id: "KILLED", elsewhere.run_id: "RUNNING", new.run_id: "RUNNING"}
    assert "was gone" in client.get_run(killed.run_id).data.tags["quill.ended"]


def test_a_failed_register_leaves_no_empty_run(tiny_evaluated, tmp_path, mlflow_registry, monkeypatch):
    from mlflow import MlflowClient

    import pipeline.register as reg
    from pipeline.config import RegisterConfig
    from pipeline.tracking import experiment_id

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(reg, "serving_checkpoint", broken)
    with pytest.raises(OSError, match="disk full"):
        reg.register(tiny_evaluated.path, tmp_path / "register", RegisterConfig())
    assert MlflowClient().search_runs([experiment_id("quill")]) == []
    assert not (tmp_path / "register").exists()


def test_cli_pyfunc_and_evaluate_share_one_sampling_config(champion_env, capsys):
    """The same prompt, seed and settings give the same text through `quill generate`, the served model and the
    evaluate stage; left unset, every settings falls back to the one set of defaults (model/sampling.py)."""
    import os

    import mlflow

    from flows.cli import main
    from model import load_checkpoint
    from model.tokenizer import Tokenizer
    from pipeline.config import EvaluateConfig
    from pipeline.evaluate import sample_rows, sampling_config
    from pipeline.tracking import download_checkpoint

    served = mlflow.pyfunc.load_model("models:/quill@champion")
    ckpt = download_checkpoint("models:/quill@champion")
    model, _, _ = load_checkpoint(ckpt)
    tok = Tokenizer(ckpt / "tokenizer.model")
    prompt = "Once upon"
    tuned = {"temperature": 1.2, "min_p": 0.02, "repetition_penalty": 1.3, "no_repeat_ngram": 2}
    saved = dict(os.environ)
    try:
        for settings in ({}, tuned):
            flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
            capsys.readouterr()
            assert main(["generate", prompt, "--model", "models:/quill@champion", "--max-new-tokens", "12",
                         "--seed", "7", "--json", *flags]) == 0
            cli = json.loads(capsys.readouterr().out)["samples"][0]
            pyfunc = served.predict([prompt], params={"max_new_tokens": 12, "seed": 7, **settings})[0]
            sampling = sampling_config(EvaluateConfig(**settings), tok.eos_id, 12, seed=7)
            evaluate = sample_rows(model, tok, [prompt], sampling, n=1)[0]["text"]
            assert cli == pyfunc == evaluate, settings
    finally:  # main() sets environment defaults for the whole process
        os.environ.clear()
        os.environ.update(saved)


def test_cli_generate_separates_samples_and_names_the_version(champion_env, capsys):
    import os

    from flows.cli import main

    saved = dict(os.environ)
    try:
        for stream in ([], ["--stream"]):
            capsys.readouterr()
            assert main(["generate", "Once upon", "--model", "models:/quill@champion", "--max-new-tokens", "6",
                         "--n", "3", *stream]) == 0
            out = capsys.readouterr()
            assert "quill: models:/quill@champion is models:/quill/1" in out.err
            lines = out.out.splitlines()
            assert [line for line in lines if line.startswith("=====")] == [
                f"===== sample {i}/3 =====" for i in (1, 2, 3)]
            assert sum(line.startswith("Once upon") for line in lines) == 3
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_every_version_has_a_model_card(champion_env, tiny_evaluated, tmp_path, capsys):
    """The card is the version's description, the run's description and artifact, and what export writes."""
    import os

    from mlflow import MlflowClient

    from flows.cli import main

    client = MlflowClient()
    mv = client.get_model_version("quill", "1")
    card = mv.description
    for heading in ("## Data", "## Tokenizer", "## Architecture", "## Training", "## Evaluation",
                    "### Bias and safety probes", "## Intended use and limits"):
        assert heading in card
    stats = tiny_evaluated.stats
    assert f"| validation bits per byte | {stats['val_bpb']:.4g} |" in card
    assert f"| stereotype preference (0.5 = none) | {stats['stereotype_preference']:.4g} |" in card
    assert "| training FLOPs |" in card and "| layers / heads / width | 1 / 2 / 32 |" in card
    assert "MODEL_CARD.md" in {a.path for a in client.list_artifacts(mv.run_id)}
    assert client.get_run(mv.run_id).data.tags["mlflow.note.content"] == card
    saved = dict(os.environ)
    try:
        assert main(["export", "--model", "models:/quill@champion", str(tmp_path / "hf")]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert (tmp_path / "hf" / "MODEL_CARD.md").read_text(encoding="utf-8") == card


def test_local_stage_register_logs_apart_and_moves_no_alias_unless_asked(mlflow_registry, tiny_evaluated, tmp_path):
    import os

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from flows.cli import main

    saved = dict(os.environ)
    try:
        assert main(["stage", "register", "--input", str(tiny_evaluated.path), "--out", str(tmp_path / "r1")]) == 0
        client = MlflowClient()
        [mv] = client.search_model_versions("name='quill'")
        assert mv.tags["gate.decision"] == "aliases_unchanged" and "first version" in mv.tags["gate.reason"]
        with pytest.raises(MlflowException):
            client.get_model_version_by_alias("quill", "challenger")
        run = client.get_run(mv.run_id)
        assert client.get_experiment(run.info.experiment_id).name == "quill-local"
        assert {"val_bpb", "val_bpc", "eval/val_bpb"} <= set(run.data.metrics)
        assert run.data.metrics["val_bpb"] == tiny_evaluated.stats["val_bpb"]

        assert main(["stage", "register", "--input", str(tiny_evaluated.path), "--out", str(tmp_path / "r2"),
                     "--move-aliases"]) == 0
        assert len(client.search_model_versions("name='quill'")) == 1  # the same version, now with its aliases
        assert client.get_model_version_by_alias("quill", "champion").version == mv.version
        assert client.get_model_version_by_alias("quill", "challenger").version == mv.version
        assert client.get_model_version("quill", mv.version).tags["gate.decision"] == "promoted"
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_local_stage_train_logs_to_its_own_experiment(mlflow_registry, tiny_evaluated, tmp_path):
    import os

    from mlflow import MlflowClient

    from flows.cli import main
    from pipeline.manifest import read_manifest

    tok_manifest = read_manifest(read_manifest(tiny_evaluated.inputs[0].path).inputs[0].path).path
    saved = dict(os.environ)
    try:
        assert main(["stage", "train", "--input", str(tok_manifest), "--out", str(tmp_path / "train"),
                     "--set", "train.max_steps=2", "--set", "train.eval_every=2", "--set", "train.batch_size=2",
                     "--set", "train.eval_tokens=256", "--set", "model.block_size=32", "--set", "model.n_layer=1"]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    client = MlflowClient()
    local = client.get_experiment_by_name("quill-local")
    [run] = client.search_runs([local.experiment_id])
    assert {"train_tokens", "train_flops", "train_loss"} <= set(run.data.metrics)
    flow_experiment = client.get_experiment_by_name("quill")
    assert flow_experiment is None or not client.search_runs([flow_experiment.experiment_id])
