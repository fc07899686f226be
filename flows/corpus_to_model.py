"""The main flow: corpus -> model, chaining the stage tasks over manifest paths.

    quill run --preset tiny                      # or: python -m flows.corpus_to_model

Each task returns its manifest path; the flow opens one MLflow run, hands its id to the stages
that log, and publishes each stage's summary, the evaluation report and a link to the MLflow run
as Prefect artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from flows.tasks import clean_task, evaluate_task, filter_task, ingest_task, register_task, tokenize_task, train_task
from pipeline.config import RunConfig, load_config
from pipeline.manifest import read_manifest
from pipeline.report import stage_summary
from pipeline.tracking import MlflowTracker


class FlowParams(BaseModel):
    """What a run needs; rendered as a form in the Prefect UI."""

    preset: Literal["tiny", "small", "base"] = Field("tiny", description="Config preset.")
    sources: list[str] = Field(default_factory=list, description="Corpus files, folders or globs (empty: the preset's).")
    overrides: list[str] = Field(default_factory=list, description="Config overrides, e.g. train.max_steps=500.")
    config_file: str | None = Field(None, description="A TOML config file applied over the preset.")
    run_name: str | None = Field(None, description="Folder under data/runs/ (default: the preset name); reruns reuse it.")

    def config(self) -> RunConfig:
        cfg = load_config(self.preset, self.config_file, self.overrides)
        if self.sources:
            cfg.sources = self.sources
        return cfg


def _publish(manifest_path: str) -> None:
    m = read_manifest(manifest_path)
    create_markdown_artifact(key=f"{m.stage}-report", markdown=stage_summary(m), description=f"{m.stage} stage")


@flow(name="corpus_to_model", log_prints=True)
def corpus_to_model(params: FlowParams = FlowParams()) -> dict:
    logger = get_run_logger()
    cfg = params.config()
    root = Path(cfg.data_root) / (params.run_name or cfg.preset)
    tracker = MlflowTracker.start(
        cfg.register.experiment, run_name=f"{flow_run.get_name() or 'local'}",
        tags={"prefect.flow_run_id": str(flow_run.get_id()), "quill.preset": cfg.preset},
    )
    tracker.log_params(cfg.model_dump(mode="json"))
    create_link_artifact(key="mlflow-run", link=tracker.url, link_text="MLflow run", description="Tracking for this flow run")
    try:
        m = ingest_task(cfg.sources, str(root / "ingest"), cfg.ingest)
        _publish(m)
        m = clean_task(m, str(root / "clean"), cfg.clean)
        _publish(m)
        m = filter_task(m, str(root / "filter"), cfg.filter)
        _publish(m)
        tok = tokenize_task(m, str(root / "tokenize"), cfg.tokenize)
        _publish(tok)
        ckpt = train_task(tok, str(root / "train"), cfg.train, cfg.model, tracker.run_id)
        _publish(ckpt)
        ev = evaluate_task(ckpt, str(root / "evaluate"), cfg.evaluate)
        create_markdown_artifact(key="evaluation-report", markdown=read_manifest(ev).output("report").read_text())
        reg = register_task(ev, str(root / "register"), cfg.register, tracker.run_id)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()
    result = json.loads(read_manifest(reg).output("registration").read_text())
    samples = [json.loads(line)["text"] for line in read_manifest(ev).output("samples").read_text().splitlines()]
    logger.info("registered %s version %s (%s)", result["model_name"], result["version"], result["decision"])
    return {**result, "run_dir": str(root.resolve()), "samples": samples}


if __name__ == "__main__":
    print(json.dumps(corpus_to_model(), indent=2))
