"""Deployments: what `quill serve` registers (schedule, parameter form) and that prefect.yaml agrees with it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def definitions(schema: dict) -> dict:
    return schema.get("definitions") or schema.get("$defs") or {}


def test_served_deployments_have_the_schedule_and_a_parameter_form(harness):
    from prefect import get_client

    from flows.params import FlowParams
    from flows.serve import deployments
    from pipeline.config import ScheduleConfig

    schedule = ScheduleConfig(cron="30 2 * * 0", timezone="Europe/Berlin", deployment="weekly")
    params = FlowParams(preset="small", overrides=["train.max_steps=50"], run_folder="weekly")
    main, *stages = deployments(params, schedule)
    assert [d.flow_name for d in stages] == [f"stage-{s}" for s in ("ingest", "clean", "filter", "tokenize", "train",
                                                                    "evaluate", "register")]
    ids = [d.apply() for d in (main, stages[4])]

    with get_client(sync_client=True) as client:
        dep, train = (client.read_deployment(i) for i in ids)
        assert client.read_deployment_by_name("corpus_to_model/weekly").id == ids[0]
    [sched] = dep.schedules
    assert (sched.schedule.cron, sched.schedule.timezone, sched.active) == ("30 2 * * 0", "Europe/Berlin", True)
    assert dep.parameters == {"params": params.model_dump(mode="json")}
    assert dep.enforce_parameter_schema

    schema = dep.parameter_openapi_schema
    assert list(schema["properties"]) == ["params"]
    form = definitions(schema)["FlowParams"]["properties"]
    assert form["preset"]["enum"] == ["tiny", "small", "writer", "base"]
    assert {"sources", "overrides", "config_file", "run_folder"} <= set(form) and "run_name" not in form
    assert form["overrides"]["description"].startswith("Config overrides")

    assert train.schedules == [] and train.name == "manual"
    assert ({"input", "out", "force", "preset", "run_folder"}
            <= set(definitions(train.parameter_openapi_schema)["StageParams"]["properties"]))
    assert train.parameters["params"]["run_folder"] == "weekly"

    # "Validate parameters" (the server's check of a new run's parameters against the form's schema)
    # refuses a misspelled override key before any run starts, and accepts a known one.
    with get_client(sync_client=True) as client:
        with pytest.raises(Exception, match="max_stepz"):
            client.create_flow_run_from_deployment(ids[0], parameters={"params": {"overrides": ["train.max_stepz=5"]}})
        client.create_flow_run_from_deployment(ids[0], parameters={"params": {"overrides": ["train.max_steps=5"]}})


def test_prefect_yaml_matches_the_flows_and_the_config_schedule():
    import yaml
    from prefect.flows import load_flow_from_entrypoint

    from pipeline.config import ScheduleConfig

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    by_flow = {}
    for dep in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO / dep["entrypoint"]))
        flow.validate_parameters(dep["parameters"])  # raises if the defaults do not fit the form
        by_flow[flow.name] = dep
        assert dep["work_pool"]["name"] == "quill-pool"
    assert set(by_flow) == {"corpus_to_model"} | {f"stage-{s}" for s in ("ingest", "clean", "filter", "tokenize",
                                                                       "train", "evaluate", "register")}
    default = ScheduleConfig()
    [sched] = by_flow["corpus_to_model"]["schedules"]
    assert (sched["cron"], sched["timezone"]) == (default.cron, default.timezone)
    assert by_flow["corpus_to_model"]["name"] == default.deployment


def test_form_model_refuses_unknown_override_keys_and_bad_values():
    from pydantic import ValidationError

    from flows.params import FlowParams, StageParams

    with pytest.raises(ValidationError, match="unknown key 'train.max_stepz'; did you mean train.max_steps"):
        FlowParams(overrides=["train.max_stepz=5"])
    with pytest.raises(ValidationError, match="train.max_steps"):
        StageParams(overrides=["train.max_steps=many"])
    with pytest.warns(FutureWarning):  # the old section name still works, with its warning
        assert FlowParams(overrides=["filter.toxicity.threshold=0.4"]).config().filter.offensive.threshold == 0.4
    assert FlowParams(overrides=[" model.n_layer = 3"]).config().model.n_layer == 3
    assert FlowParams(run_name="old-key").run_folder == "old-key"  # deployments saved before the rename
