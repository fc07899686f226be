"""One flow per stage, so a single stage can be triggered from the Prefect UI (or `prefect deployment run`).

    quill serve                       # serves these next to corpus_to_model (deployments stage-<name>/manual)
    python -c "from flows.stages import train_flow, StageParams; train_flow(StageParams(run_folder='tiny'))"

Each takes `StageParams` (a UI form): with only `run_folder` set, a stage reads the previous stage's
manifest in data/runs/<run_folder>/ and writes its own folder there, exactly as `corpus_to_model` does;
`input`/`out` point it anywhere else, like `quill stage`. Each returns its manifest path.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.artifacts import mlflow_run
from flows.logs import show_stage_logs
from flows.params import StageParams
from flows.tasks import (
    clean_task,
    evaluate_task,
    filter_task,
    ingest_task,
    register_task,
    step,
    tokenize_task,
    train_task,
)

__all__ = ["STAGE_FLOWS", "StageParams"]


@flow(name="stage-ingest", log_prints=True)
def ingest_flow(params: StageParams = StageParams()) -> str:
    """Read corpus files into document shards."""
    show_stage_logs()
    cfg, inputs, out = params.resolve("ingest")
    return step(ingest_task, inputs, out, cfg.ingest, params.force)


@flow(name="stage-clean", log_prints=True)
def clean_flow(params: StageParams = StageParams()) -> str:
    """Normalise text, drop too short/long and off-language documents."""
    show_stage_logs()
    cfg, inputs, out = params.resolve("clean")
    return step(clean_task, inputs[0], out, cfg.clean, params.force)


@flow(name="stage-filter", log_prints=True)
def filter_flow(params: StageParams = StageParams()) -> str:
    """Quality, offensive content, PII and duplicate filters."""
    show_stage_logs()
    cfg, inputs, out = params.resolve("filter")
    return step(filter_task, inputs[0], out, cfg.filter, params.force)


@flow(name="stage-tokenize", log_prints=True)
def tokenize_flow(params: StageParams = StageParams()) -> str:
    """Train SentencePiece and write token shards."""
    show_stage_logs()
    cfg, inputs, out = params.resolve("tokenize")
    return step(tokenize_task, inputs[0], out, cfg.tokenize, params.force)


@flow(name="stage-train", log_prints=True)
def train_flow(params: StageParams = StageParams()) -> str:
    """Train the GPT, logging to a new MLflow run."""
    show_stage_logs()
    cfg, inputs, out = params.resolve("train")
    with mlflow_run(cfg, f"stage train {out}", {"quill.stage": "train"}, Path(out).parent) as tracker:
        return step(train_task, inputs[0], out, cfg.train, cfg.model, tracker.run_id, params.force,
                    params.train_processes)


@flow(name="stage-evaluate", log_prints=True)
def evaluate_flow(params: StageParams = StageParams()) -> str:
    """Held-out bits per byte, samples and the evaluation report."""
    show_stage_logs()
    cfg, inputs, out = params.resolve("evaluate")
    return step(evaluate_task, inputs[0], out, cfg.evaluate, params.force)


@flow(name="stage-register", log_prints=True)
def register_flow(params: StageParams = StageParams()) -> str:
    """Register the evaluated model in MLflow (to its training run) and gate the champion alias."""
    show_stage_logs()
    cfg, inputs, out = params.resolve("register")
    return step(register_task, inputs[0], out, cfg.register, None, params.force)


STAGE_FLOWS = {"ingest": ingest_flow, "clean": clean_flow, "filter": filter_flow, "tokenize": tokenize_flow,
               "train": train_flow, "evaluate": evaluate_flow, "register": register_flow}
