"""End to end: the whole flow on the shipped sample corpus under a Prefect test harness.

One scenario (module fixture) runs the flow five times on one run folder and records what each run
left behind; the tests below assert on it:
  first     everything runs, version 1 becomes champion
  same      nothing changed: every stage skipped
  train     train.lr changed: only train, evaluate, register rerun (version 2)
  failed    a filter threshold changed and tokenize.vocab_size is too small: filter reruns, tokenize fails
  resumed   the same filter change with a valid vocabulary: resumes at tokenize (version 3)
Skips are read from the manifests (created_at and file mtime), never from timings.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import SAMPLE

FAST = ["train.max_steps=10", "train.eval_every=10", "train.batch_size=8", "evaluate.max_new_tokens=16"]
TRAIN_CHANGE = "train.lr=0.002"
FILTER_CHANGE = "filter.offensive.threshold=0.45"
STAGES = ["ingest", "clean", "filter", "tokenize", "train", "evaluate", "register"]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def stamps(run: Path) -> dict[str, tuple[str, int]]:
    """Per stage: (created_at, mtime) of its manifest; equal stamps mean the stage was skipped."""
    from pipeline.manifest import read_manifest

    return {s: (read_manifest(run / s).created_at, (run / s / "manifest.json").stat().st_mtime_ns) for s in STAGES}


@pytest.fixture(scope="module")
def scenario(harness, tmp_path_factory):
    from flows.corpus_to_model import FlowParams, StageFailed, corpus_to_model

    tmp = tmp_path_factory.mktemp("flow")
    shutil.copytree(SAMPLE, tmp / "corpus")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")

        def run(*extra: str) -> dict:
            return corpus_to_model(FlowParams(preset="tiny", sources=["corpus"], overrides=FAST + list(extra)))

        results, snaps = {"first": run()}, {}
        root = Path(results["first"]["run_dir"])
        snaps["first"] = stamps(root)
        results["same"] = run()
        snaps["same"] = stamps(root)
        results["train"] = run(TRAIN_CHANGE)
        snaps["train"] = stamps(root)
        with pytest.raises(StageFailed) as failure:
            run(TRAIN_CHANGE, FILTER_CHANGE, "tokenize.vocab_size=64")
        snaps["failed"] = stamps(root)
        results["resumed"] = run(TRAIN_CHANGE, FILTER_CHANGE)
        snaps["resumed"] = stamps(root)
        yield {"results": results, "stamps": snaps, "root": root, "error": failure.value, "tmp": tmp}


def rerun(snaps: dict, before: str, after: str) -> list[str]:
    return [s for s in STAGES if snaps[before][s] != snaps[after][s]]


def mlflow_client(tmp: Path):
    from mlflow import MlflowClient

    from pipeline.tracking import configure

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
        configure()
        return MlflowClient()


def test_first_run_registers_a_champion(scenario):
    from pipeline.manifest import read_manifest

    first, root = scenario["results"]["first"], scenario["root"]
    assert first["version"] == 1 and first["champion"] and len(first["samples"]) == 3
    for s in ("ingest", "clean", "filter"):
        st = read_manifest(root / s).stats
        assert st["docs_in"] == st["docs_kept"] + sum(st["dropped"].values())
    assert (root / "train" / "checkpoint" / "model.safetensors").exists()
    client = mlflow_client(scenario["tmp"])
    champion = client.get_model_version_by_alias("quill", "champion")
    assert int(champion.version) == 1
    mlrun = client.get_run(champion.run_id)
    assert mlrun.info.run_id == first["mlflow_run_id"] and mlrun.info.status == "FINISHED"
    assert "val/bpb" in mlrun.data.metrics and "eval/val_bpb" in mlrun.data.metrics
    assert mlrun.data.tags["prefect.flow_run_id"] == first["flow_run_id"]
    assert {"manifests", "evaluation", "plots"} <= {a.path for a in client.list_artifacts(champion.run_id)}
    assert {f"manifests/{s}" for s in STAGES} == {a.path for a in client.list_artifacts(champion.run_id, "manifests")}
    assert {"val_bpb", "val_bpc", "train_tokens", "train_flops"} <= set(mlrun.data.metrics)
    # The model card counts what each data stage kept (its description in the registry).
    clean = read_manifest(root / "clean").stats
    assert f"| clean | {clean['docs_in']:,} | {clean['docs_kept']:,} |" in champion.description


def test_unchanged_rerun_skips_every_stage(scenario):
    assert rerun(scenario["stamps"], "first", "same") == []
    assert scenario["results"]["same"]["version"] == 1
    # Nothing ran, so nothing was tracked: the flow run leaves no empty MLflow run behind.
    same = scenario["results"]["same"]
    assert same["mlflow_run_id"] is None
    runs = mlflow_client(scenario["tmp"]).search_runs(
        [e.experiment_id for e in mlflow_client(scenario["tmp"]).search_experiments()])
    assert runs and not [r for r in runs if r.data.tags.get("prefect.flow_run_id") == same["flow_run_id"]]
    # Versions 1, 2 and 3 come from the first, train and resumed runs: the rerun registered no duplicate.
    assert len(mlflow_client(scenario["tmp"]).search_model_versions("name='quill'")) == 3


def test_training_change_reruns_only_train_evaluate_register(scenario):
    assert rerun(scenario["stamps"], "same", "train") == ["train", "evaluate", "register"]
    assert scenario["results"]["train"]["version"] == 2


def test_failed_stage_is_named_and_leaves_earlier_outputs(scenario):
    from pipeline.manifest import read_manifest

    error, root = scenario["error"], scenario["root"]
    assert str(error).startswith("stage 'tokenize' failed: ValueError: tokenize.vocab_size=64 is too small")
    # Filter reran with its new threshold; tokenize and later still hold the previous good outputs.
    assert rerun(scenario["stamps"], "train", "failed") == ["filter"]
    for s in ("tokenize", "train", "evaluate", "register"):
        for value in read_manifest(root / s).outputs.values():
            assert all((root / p).exists() for p in (value if isinstance(value, list) else [value]))
    client = mlflow_client(scenario["tmp"])
    runs = client.search_runs([client.get_experiment_by_name("quill").experiment_id],
                              order_by=["attributes.start_time DESC"])
    assert [r.info.status for r in runs[:2]] == ["FINISHED", "FAILED"]  # the resumed run, then the failed one


def test_failed_flow_run_state_names_the_stage(scenario):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType

    only_failed = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["FAILED"])))
    with get_client(sync_client=True) as client:
        failed = client.read_flow_runs(flow_run_filter=only_failed)
    assert len(failed) == 1 and "stage 'tokenize' failed" in failed[0].state.message


def test_rerun_resumes_at_the_failed_stage(scenario):
    # After the failure the fixed config reuses ingest, clean and the new filter output: it resumes at
    # tokenize. Together with the failed run: a filter threshold change reran filter and everything after it.
    assert rerun(scenario["stamps"], "failed", "resumed") == ["tokenize", "train", "evaluate", "register"]
    assert rerun(scenario["stamps"], "train", "resumed") == STAGES[2:]
    assert scenario["results"]["resumed"]["version"] == 3
    assert int(mlflow_client(scenario["tmp"]).get_model_version_by_alias("quill", "challenger").version) == 3


def test_flow_run_artifacts(scenario):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    first = scenario["results"]["first"]
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[first["flow_run_id"]])))
    # Keys sort in flow order: the stage's number first, 0 for the run's own MLflow link.
    by_key = {a.key.split("-", 1)[1]: a for a in arts}
    assert sorted(a.key for a in arts) == [
        "0-mlflow-run", "1-ingest-report", "2-clean-report", "3-filter-report", "4-token-stats", "4-tokenize-report",
        "5-train-report", "5-training-progress", "5-training-summary", "6-evaluate-report", "6-evaluation-report",
        "7-mlflow-model", "7-register-report"]
    assert by_key["training-progress"].type == "progress" and by_key["training-progress"].data == 100
    assert by_key["token-stats"].type == "table" and "total" in str(by_key["token-stats"].data)
    assert "**10** steps" in by_key["training-summary"].data
    assert first["mlflow_run_id"] in by_key["mlflow-run"].data
    assert "/#/models/quill/versions/1" in by_key["mlflow-model"].data


def test_single_stage_flow_uses_the_run_folder(scenario):
    from flows.stages import StageParams, evaluate_flow

    root = scenario["root"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(scenario["tmp"])
        path = evaluate_flow(StageParams(preset="tiny", run_folder=root.name,
                                         overrides=FAST + [TRAIN_CHANGE, FILTER_CHANGE]))
    assert path == str(root / "evaluate" / "manifest.json")
    assert rerun({"a": scenario["stamps"]["resumed"], "b": stamps(root)}, "a", "b") == []  # up to date: skipped


def test_progress_tracker_moves_and_forwards(monkeypatch):
    import flows.artifacts as artifacts

    calls, logged = [], []
    monkeypatch.setattr(artifacts, "create_progress_artifact",
                        lambda p, key, description: calls.append(("create", p)) or "id")
    monkeypatch.setattr(artifacts, "update_progress_artifact", lambda aid, p: calls.append(("update", p)))

    class Inner:
        run_id = "abc"

        def log_metrics(self, metrics, step):
            logged.append(step)

    tracker = artifacts.ProgressTracker(Inner(), total_steps=4, min_interval=0)
    for step in range(1, 5):
        tracker.log_metrics({"loss": 1.0}, step)
    assert calls == [("create", 25.0), ("update", 50.0), ("update", 75.0), ("update", 100.0)]
    assert logged == [1, 2, 3, 4] and tracker.run_id == "abc"


def test_stage_params_default_to_the_run_folder():
    from flows.params import StageParams

    cfg, inputs, out = StageParams(run_folder="r1").resolve("tokenize")
    assert (inputs == [str(Path(cfg.data_root) / "r1" / "filter" / "manifest.json")]
            and out == str(Path(cfg.data_root) / "r1" / "tokenize"))
    assert StageParams().resolve("ingest")[1] == cfg.sources
    with pytest.raises(ValueError, match="exactly one input"):
        StageParams(input=["a", "b"]).resolve("clean")


@pytest.mark.slow
def test_train_task_runs_torchrun_on_two_cpu_processes(scenario, tmp_path):
    from flows.tasks import train_task
    from pipeline.config import load_config
    from pipeline.manifest import read_manifest

    cfg = load_config("tiny", overrides=FAST)
    tok = str(scenario["root"] / "tokenize" / "manifest.json")
    path = train_task.fn(tok, str(tmp_path / "train"), cfg.train, cfg.model, None, nproc=2)
    m = read_manifest(path)
    assert m.stats["world_size"] == 2 and (m.stage_dir / "checkpoint" / "model.safetensors").exists()


def test_io_stages_retry_only_transient_errors():
    from flows.tasks import ingest_task, register_task, tokenize_task, transient

    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self):
            raise self.exc

    class Busy(Exception):
        error_code = "TEMPORARILY_UNAVAILABLE"

    assert [transient(None, None, State(e)) for e in (ConnectionError("reset"), TimeoutError(), Busy())] == [True] * 3
    assert [transient(None, None, State(e)) for e in (FileNotFoundError("x"), ValueError("bad config"))] == [False] * 2
    assert ingest_task.retries == register_task.retries == 3 and tokenize_task.retries == 0


def test_a_no_op_rerun_is_found_without_prefect(scenario, monkeypatch, capsys):
    """`quill run` on the embedded default checks the manifests first: nothing to do, no server started."""
    import flows.corpus_to_model
    from flows.cli import main
    from flows.params import FlowParams
    from flows.uptodate import finished_run

    monkeypatch.chdir(scenario["tmp"])
    latest = FAST + [TRAIN_CHANGE, FILTER_CHANGE]
    result, lines = finished_run(FlowParams(preset="tiny", sources=["corpus"], overrides=latest))
    assert result is not None and [line.split(":")[0] for line in lines] == STAGES
    assert result["version"] == scenario["results"]["resumed"]["version"] == 3
    assert result["samples"] == scenario["results"]["resumed"]["samples"]

    changed, lines = finished_run(FlowParams(preset="tiny", sources=["corpus"], overrides=latest + ["train.lr=0.001"]))
    assert changed is None and lines[-1] == "train: must run: its config changed"

    def no_flow(*a, **k):
        raise AssertionError("the flow (and its Prefect server) started for a no-op rerun")

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(flows.corpus_to_model, "corpus_to_model", no_flow)
    argv = ["run", "--preset", "tiny", "--source", "corpus"] + [a for o in latest for a in ("--set", o)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Every stage is up to date: nothing to run (no Prefect server started)." in out
    assert "Registered model quill version 3" in out

    # With a Prefect server configured, the flow runs (and the server records it) even when nothing changed.
    calls = []
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setattr(flows.corpus_to_model, "corpus_to_model",
                        lambda params: calls.append(params) or scenario["results"]["resumed"])
    assert main(argv) == 0 and len(calls) == 1
    assert "Every stage is up to date" not in capsys.readouterr().out


def test_stage_logs_reach_the_flow_runs_logs(scenario):
    """The stages' own INFO lines (pipeline and model loggers) are in the flow run's logs, which the UI shows."""
    import logging

    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    first = scenario["results"]["first"]
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[first["flow_run_id"]])))
    lines = {(log.name, log.message.split(":")[0]) for log in logs if log.level == logging.INFO}
    for logger, prefix in [("pipeline.ingest", "ingest"), ("pipeline.clean", "clean"), ("pipeline.filter", "filter"),
                           ("pipeline.tokenize", "tokenize"), ("pipeline.train", "train"),
                           ("pipeline.evaluate", "evaluate"), ("pipeline.register", "register")]:
        assert (logger, prefix) in lines, f"no INFO line of {logger} in the flow run's logs"
    assert any("train loss" in log.message and log.task_run_id for log in logs)  # tied to the train task's run
