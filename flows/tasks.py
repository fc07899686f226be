"""Prefect tasks: thin wrappers of the stage functions, passing manifest paths (small JSON results).

Retries with exponential backoff go on the I/O stages (ingest, register) and only for transient
errors (network, timeouts, an MLflow server that is busy); a bad config or a missing file fails at
once. `step()` is how the flows call a task: it publishes the stage's artifacts and turns any
failure into `StageFailed("stage 'tokenize' failed: ...")`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import Task, get_run_logger, task
from prefect.tasks import exponential_backoff

from flows.artifacts import ProgressTracker, publish
from flows.launch import torchrun_train
from flows.logs import show_stage_logs
from pipeline.clean import clean
from pipeline.config import (
    CleanConfig,
    EvaluateConfig,
    FilterConfig,
    IngestConfig,
    ModelConfig,
    RegisterConfig,
    TokenizeConfig,
    TrainConfig,
)
from pipeline.evaluate import evaluate
from pipeline.filter import filter_docs
from pipeline.ingest import ingest
from pipeline.register import register
from pipeline.tokenize import tokenize
from pipeline.train import train

# Results are manifest paths: JSON-serialisable, readable in the UI, never pickled objects.
TASK = dict(result_serializer="json", persist_result=False)
NOT_TRANSIENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
TRANSIENT_MLFLOW = {"TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED"}


class StageFailed(RuntimeError):
    """A stage raised; the message names the stage and the cause."""


def transient(task: Task, task_run, state) -> bool:
    """Retry condition: network and server hiccups only (OSError covers URLError, requests, timeouts)."""
    try:
        state.result()
    except NOT_TRANSIENT:
        return False
    except OSError:
        return True
    except Exception as exc:  # MLflow wraps its REST errors; retry only the ones a server may recover from
        return getattr(exc, "error_code", None) in TRANSIENT_MLFLOW
    return False


IO = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
          retry_condition_fn=transient)


@task(name="ingest", **IO, **TASK)
def ingest_task(sources: list[str], out_dir: str, cfg: IngestConfig, force: bool = False) -> str:
    show_stage_logs()
    return str(ingest(sources, Path(out_dir), cfg, force=force).path)


@task(name="clean", **TASK)
def clean_task(in_manifest: str, out_dir: str, cfg: CleanConfig, force: bool = False) -> str:
    show_stage_logs()
    return str(clean(Path(in_manifest), Path(out_dir), cfg, force=force).path)


@task(name="filter", **TASK)
def filter_task(in_manifest: str, out_dir: str, cfg: FilterConfig, force: bool = False) -> str:
    show_stage_logs()
    return str(filter_docs(Path(in_manifest), Path(out_dir), cfg, force=force).path)


@task(name="tokenize", **TASK)
def tokenize_task(in_manifest: str, out_dir: str, cfg: TokenizeConfig, force: bool = False) -> str:
    show_stage_logs()
    return str(tokenize(Path(in_manifest), Path(out_dir), cfg, force=force).path)


@task(name="train", **TASK)
def train_task(in_manifest: str, out_dir: str, cfg: TrainConfig, model_cfg: ModelConfig, mlflow_run_id: str | None,
               force: bool = False, nproc: int = 1) -> str:
    show_stage_logs()
    if nproc > 1:  # torchrun, one process per GPU (flows/launch.py)
        return torchrun_train(in_manifest, out_dir, cfg, model_cfg, nproc, mlflow_run_id, force)
    tracker = ProgressTracker.for_run(mlflow_run_id, cfg.max_steps)
    return str(train(Path(in_manifest), Path(out_dir), cfg, model_cfg, tracker, force=force).path)


@task(name="evaluate", **TASK)
def evaluate_task(in_manifest: str, out_dir: str, cfg: EvaluateConfig, force: bool = False) -> str:
    show_stage_logs()
    return str(evaluate(Path(in_manifest), Path(out_dir), cfg, force=force).path)


@task(name="register", **IO, **TASK)
def register_task(in_manifest: str, out_dir: str, cfg: RegisterConfig, mlflow_run_id: str | None,
                  force: bool = False) -> str:
    show_stage_logs()
    return str(register(Path(in_manifest), Path(out_dir), cfg, run_id=mlflow_run_id, force=force).path)


DATA_STAGES = {"ingest", "clean", "filter", "tokenize"}


def step(stage_task: Task, *args) -> str:
    """Run one stage task and publish its artifacts; a failure becomes StageFailed naming the stage.

    Data stages go through the flow's task runner (threads, processes, dask, ray); train, evaluate
    and register run in the flow's own process, next to its MLflow run and accelerators.
    """
    try:
        path = stage_task.submit(*args).result() if stage_task.name in DATA_STAGES else stage_task(*args)
    except Exception as exc:
        message = f"stage {stage_task.name!r} failed: {type(exc).__name__}: {exc}"
        get_run_logger().error(message)
        raise StageFailed(message) from exc
    publish(path)
    return path
