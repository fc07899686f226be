"""Serve Quill from one process: corpus_to_model on the config's cron schedule, plus one flow per stage.

    prefect server start --host 127.0.0.1                   # UI at http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    quill serve --preset small                               # or: python -m flows.serve

Deployments: `corpus_to_model/<schedule.deployment>` (cron `schedule.cron` in `schedule.timezone`),
and `stage-<name>/manual` without a schedule, for runs triggered from the UI or with
`prefect deployment run 'stage-train/manual' --param params='{"run_folder": "small"}'`.
Their default parameters are the ones `quill serve` was given; the UI form can change any of them.
`prefect.yaml` describes the same deployments for a process work pool (`prefect deploy --all`).
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_URL
from prefect.task_runners import TaskRunner

from flows.corpus_to_model import corpus_to_model
from flows.params import FlowParams, StageParams
from flows.stages import STAGE_FLOWS
from pipeline.config import ScheduleConfig

STAGE_DEPLOYMENT = "manual"
TAGS = ["quill"]


def api_url() -> str | None:
    """The Prefect API this process talks to (PREFECT_API_URL from the environment or the profile), if any."""
    return PREFECT_API_URL.value() or None


def deployments(params: FlowParams, schedule: ScheduleConfig, runner: TaskRunner | None = None,
                stages: bool = True) -> list[RunnerDeployment]:
    """The scheduled corpus_to_model deployment, then (if `stages`) one manual deployment per stage flow;
    their data stages run on `runner` (default: threads)."""
    def on_runner(f):
        return f.with_options(task_runner=runner) if runner else f

    out = [on_runner(corpus_to_model).to_deployment(
        name=schedule.deployment, tags=[*TAGS, "retrain"], parameters={"params": params.model_dump(mode="json")},
        schedule=Cron(schedule.cron, timezone=schedule.timezone, active=schedule.active),
        description=f"Retrain on cron '{schedule.cron}' ({schedule.timezone}); stages that are up to date are skipped.",
    )]
    stage_params = StageParams(**params.model_dump(include=set(StageParams.model_fields)))
    for name, stage_flow in STAGE_FLOWS.items() if stages else ():
        out.append(on_runner(stage_flow).to_deployment(
            name=STAGE_DEPLOYMENT, tags=[*TAGS, "stage"], parameters={"params": stage_params.model_dump(mode="json")},
            description=f"Run the {name} stage alone on data/runs/<run_folder>/ (or on input/out).",
        ))
    return out


def serve_all(params: FlowParams, schedule: ScheduleConfig, runner: TaskRunner | None = None, stages: bool = True,
              limit: int = 1) -> None:
    """Register the deployments and run their flow runs from this process until interrupted.

    `limit` flow runs at a time (default 1: runs on one run folder must not overlap); schedules stay
    active when the process stops (`pause_on_shutdown=False`).
    """
    serve(*deployments(params, schedule, runner, stages), pause_on_shutdown=False, limit=limit)


if __name__ == "__main__":
    from pipeline.config import load_config

    serve_all(FlowParams(), load_config("tiny").schedule)
