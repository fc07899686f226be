"""Prefect tasks: thin wrappers of the stage functions, passing manifest paths (small JSON results)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from pipeline.clean import clean
from pipeline.config import CleanConfig, EvaluateConfig, FilterConfig, IngestConfig, ModelConfig, RegisterConfig, TokenizeConfig, TrainConfig
from pipeline.evaluate import evaluate
from pipeline.filter import filter_docs
from pipeline.ingest import ingest
from pipeline.register import register
from pipeline.tokenize import tokenize
from pipeline.tracking import MlflowTracker, NullTracker
from pipeline.train import train

# Results are manifest paths: JSON-serialisable, readable in the UI, never pickled objects.
TASK = dict(result_serializer="json", persist_result=False)


@task(name="ingest", retries=2, retry_delay_seconds=[2, 10], **TASK)
def ingest_task(sources: list[str], out_dir: str, cfg: IngestConfig) -> str:
    return str(ingest(sources, Path(out_dir), cfg).path)


@task(name="clean", **TASK)
def clean_task(in_manifest: str, out_dir: str, cfg: CleanConfig) -> str:
    return str(clean(Path(in_manifest), Path(out_dir), cfg).path)


@task(name="filter", **TASK)
def filter_task(in_manifest: str, out_dir: str, cfg: FilterConfig) -> str:
    return str(filter_docs(Path(in_manifest), Path(out_dir), cfg).path)


@task(name="tokenize", **TASK)
def tokenize_task(in_manifest: str, out_dir: str, cfg: TokenizeConfig) -> str:
    return str(tokenize(Path(in_manifest), Path(out_dir), cfg).path)


@task(name="train", **TASK)
def train_task(in_manifest: str, out_dir: str, cfg: TrainConfig, model_cfg: ModelConfig, mlflow_run_id: str | None) -> str:
    tracker = MlflowTracker(mlflow_run_id) if mlflow_run_id else NullTracker()
    return str(train(Path(in_manifest), Path(out_dir), cfg, model_cfg, tracker).path)


@task(name="evaluate", **TASK)
def evaluate_task(in_manifest: str, out_dir: str, cfg: EvaluateConfig) -> str:
    return str(evaluate(Path(in_manifest), Path(out_dir), cfg).path)


@task(name="register", retries=2, retry_delay_seconds=[2, 10], **TASK)
def register_task(in_manifest: str, out_dir: str, cfg: RegisterConfig, mlflow_run_id: str | None) -> str:
    return str(register(Path(in_manifest), Path(out_dir), cfg, run_id=mlflow_run_id).path)
