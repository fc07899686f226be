"""The main flow: corpus -> model, chaining the stage tasks over manifest paths.

    quill run --preset tiny [--task-runner threads|processes|dask|ray]
    python -m flows.corpus_to_model                  # the same with the defaults
    quill serve                                      # deploy it on the config's cron schedule (flows/serve.py)

Each task returns its manifest path; a stage whose manifest matches its inputs and config is
skipped, so a rerun redoes only what changed and a failed run resumes at the stage that failed.
The flow opens one MLflow run (marked FAILED if a stage fails), hands its id to train and register,
and publishes each stage's report, token statistics, a training summary with a live progress bar,
the evaluation report and links to the MLflow run and the registered model as Prefect artifacts.
"""

from __future__ import annotations

import json

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.artifacts import mlflow_run
from flows.logs import show_stage_logs
from flows.params import FlowParams
from flows.tasks import (
    StageFailed,
    clean_task,
    evaluate_task,
    filter_task,
    ingest_task,
    register_task,
    step,
    tokenize_task,
    train_task,
)
from pipeline.manifest import read_manifest

__all__ = ["FlowParams", "StageFailed", "corpus_to_model"]


@flow(name="corpus_to_model", log_prints=True)
def corpus_to_model(params: FlowParams = FlowParams()) -> dict:
    """Ingest, clean, filter, tokenize, train, evaluate and register a writing model; stages that are up to date
    are skipped."""
    show_stage_logs()
    cfg = params.config()
    root = params.run_dir(cfg)
    tags = {"prefect.flow_run_id": str(flow_run.get_id()), "quill.preset": cfg.preset}
    with mlflow_run(cfg, flow_run.get_name() or "local", tags, root) as tracker:
        m = step(ingest_task, cfg.sources, str(root / "ingest"), cfg.ingest)
        m = step(clean_task, m, str(root / "clean"), cfg.clean)
        m = step(filter_task, m, str(root / "filter"), cfg.filter)
        m = step(tokenize_task, m, str(root / "tokenize"), cfg.tokenize)
        m = step(train_task, m, str(root / "train"), cfg.train, cfg.model, tracker.run_id, False,
                 params.train_processes)
        ev = step(evaluate_task, m, str(root / "evaluate"), cfg.evaluate)
        reg = step(register_task, ev, str(root / "register"), cfg.register, tracker.run_id)
        if tracker.run_id:  # register's own manifest is written after it logs the others: the whole chain
            tracker.log_artifact(reg, "manifests/register")
            tracker.log_artifact(read_manifest(reg).output("registration"), "manifests/register")
    result = json.loads(read_manifest(reg).output("registration").read_text())
    samples = [json.loads(line)["text"] for line in read_manifest(ev).output("samples").read_text().splitlines()]
    get_run_logger().info("registered %s version %s (%s)", result["model_name"], result["version"], result["decision"])
    return {**result, "run_dir": str(root.resolve()), "samples": samples,
            "flow_run_id": str(flow_run.get_id()), "mlflow_run_id": tracker.run_id}


if __name__ == "__main__":
    print(json.dumps(corpus_to_model(), indent=2))
