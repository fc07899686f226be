"""What a flow run shows in the Prefect UI: per-stage reports, token statistics, a training summary,
the evaluation report, links to MLflow and a training progress bar.

The content comes from the stage manifests (`pipeline.reports` renders it); this module only hands it
to Prefect. `ProgressTracker` wraps the MLflow tracker that `pipeline.train` already logs to, so the
progress artifact moves with every logged step and no Prefect import enters `pipeline/`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from pipeline import STAGES
from pipeline.config import RunConfig
from pipeline.manifest import Manifest, read_manifest
from pipeline.reports import stage_summary, token_stats, training_summary
from pipeline.tracking import MlflowTracker, NullTracker, Tracker, ui_url


def key(stage: str, name: str) -> str:
    """An artifact key that sorts in flow order: the stage's number first ("4-token-stats"); 0 is the whole run."""
    return f"{STAGES.index(stage) + 1 if stage in STAGES else 0}-{name}"


def _token_stats(m: Manifest) -> None:
    create_table_artifact(token_stats(m), key=key("tokenize", "token-stats"),
                          description=f"Tokens per split: vocabulary {m.stats['vocab_size']}, "
                                      f"{m.stats['bytes_per_token']} bytes/token")


def _training_summary(m: Manifest) -> None:
    create_markdown_artifact(training_summary(m), key=key("train", "training-summary"), description="Training summary")


def _evaluation_report(m: Manifest) -> None:
    create_markdown_artifact(m.output("report").read_text(encoding="utf-8"),
                             key=key("evaluate", "evaluation-report"),
                             description="Evaluation report (bits per byte, samples)")


def _model_link(m: Manifest) -> None:
    s = m.stats
    create_link_artifact(f"{ui_url()}/#/models/{s['model_name']}/versions/{s['version']}",
                         key=key("register", "mlflow-model"),
                         link_text=f"{s['model_name']} version {s['version']}",
                         description=f"Registered model ({'champion' if s['champion'] else 'challenger'}: "
                                     f"{s['decision']})")


EXTRA = {"tokenize": _token_stats, "train": _training_summary, "evaluate": _evaluation_report, "register": _model_link}


def publish(manifest_path: str) -> None:
    """The stage's data report, plus its own artifact for tokenize, train, evaluate and register."""
    m = read_manifest(manifest_path)
    create_markdown_artifact(stage_summary(m), key=key(m.stage, f"{m.stage}-report"),
                             description=f"stage {STAGES.index(m.stage) + 1} of {len(STAGES)}: {m.stage}")
    if m.stage in EXTRA:
        EXTRA[m.stage](m)


@contextmanager
def mlflow_run(cfg: RunConfig, name: str, tags: dict[str, str], run_dir: Path) -> Iterator[MlflowTracker]:
    """An MLflow run for this flow run, linked from the Prefect UI; marked FAILED if the body raises after a
    stage logged or wrote something (else deleted: an empty FAILED run only clutters the experiment).

    When no stage ran (every manifest under `run_dir` is the one that was there before), the run
    holds nothing but parameters: it is deleted instead of cluttering the experiment, and
    `tracker.run_id` is set to None.
    """
    before = _manifest_stamps(run_dir)
    tracker = MlflowTracker.start(cfg.register.experiment, run_name=name, tags=tags)
    tracker.log_params(cfg.model_dump(mode="json"))
    link = lambda: create_link_artifact(tracker.url, key=key("run", "mlflow-run"), link_text="MLflow run",  # noqa: E731
                                        description="Tracking for this flow run")
    try:
        yield tracker
    except BaseException:
        if _manifest_stamps(run_dir) == before and not tracker.client.get_run(tracker.run_id).data.metrics:
            tracker.client.delete_run(tracker.run_id)  # failed before any stage logged anything: nothing to keep
            tracker.run_id = None
            raise
        tracker.end("FAILED")
        link()
        raise
    if _manifest_stamps(run_dir) == before:
        get_run_logger().info("every stage was up to date: no MLflow run kept")
        tracker.client.delete_run(tracker.run_id)
        tracker.run_id = None
        return
    tracker.end()
    link()


def _manifest_stamps(run_dir: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of each stage manifest: a stage that runs replaces its manifest file."""
    return {p.parent.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in Path(run_dir).glob("*/manifest.json")}


class ProgressTracker:
    """A Tracker whose `log_metrics(step)` also moves a Prefect progress artifact to step / total_steps.

    Everything else goes to the wrapped tracker. The artifact is created at the first logged step and
    updated at most every `min_interval` seconds (always at the last step), so the API is not hit per step.
    """

    def __init__(self, inner: Tracker, total_steps: int, key: str = key("train", "training-progress"),
                 min_interval: float = 2.0):
        self.inner, self.total, self.key, self.min_interval = inner, max(1, total_steps), key, min_interval
        self.artifact_id = None
        self._last = 0.0

    @classmethod
    def for_run(cls, mlflow_run_id: str | None, total_steps: int) -> ProgressTracker:
        return cls(MlflowTracker(mlflow_run_id) if mlflow_run_id else NullTracker(), total_steps)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.inner.log_metrics(metrics, step)
        progress, now = round(100.0 * min(step, self.total) / self.total, 1), time.monotonic()
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(progress, key=self.key, description="Training steps done")
        elif progress >= 100 or now - self._last >= self.min_interval:
            update_progress_artifact(self.artifact_id, progress)
        else:
            return
        self._last = now
