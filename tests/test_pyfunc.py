"""The served model's limits: a request cannot ask for unbounded work or pass values that mean nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException

from pipeline.config import RegisterConfig
from pipeline.manifest import read_manifest
from pipeline.pyfunc import LIMITS, QuillTextGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def served(tiny_evaluated):
    """The pyfunc loaded as `mlflow models serve` loads it, with a model_config like the register stage logs."""
    ckpt = read_manifest(tiny_evaluated.inputs[0].path).output("checkpoint")
    model = QuillTextGenerator()
    model.load_context(SimpleNamespace(artifacts={"checkpoint": str(ckpt)},
                                       model_config={**RegisterConfig().serve_limits(), "max_new_tokens": 50}))
    return model


def predict(model, prompts, **params):
    return model.predict(None, prompts, params=params)


def bad_request(model, prompts, match, **params):
    with pytest.raises(MlflowException, match=match) as info:
        predict(model, prompts, **params)
    assert info.value.get_http_status_code() == 400


def test_limits_come_from_the_logged_model_config(served):
    assert served.limits == {**LIMITS, "max_new_tokens": 50}
    assert RegisterConfig().serve_limits() == LIMITS  # the config's defaults are the pyfunc's


def test_requests_beyond_the_caps_are_400(served):
    assert len(predict(served, ["Once"], max_new_tokens=50, seed=1)) == 1
    bad_request(served, ["Once"], "max_new_tokens=1000000000 is over this server's limit of 50",
                max_new_tokens=1_000_000_000)
    bad_request(served, ["x" * (LIMITS["max_prompt_chars"] + 1)], "a prompt of 4001 characters; at most 4000")
    bad_request(served, ["Once"] * (LIMITS["max_prompts"] + 1), "65 prompts in one request; at most 64")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinite_params_are_400(served, value):
    bad_request(served, ["Once"], "param temperature is .*; give a finite number", temperature=value)


def test_unknown_param_names_are_400(served):
    bad_request(served, ["Once"], r"unknown sampling settings \['max_tokens'\]", max_tokens=5)


def test_generation_stops_at_the_time_limit(served, monkeypatch):
    monkeypatch.setitem(served.limits, "time_limit_s", 0.0)  # past the deadline at the first token
    texts = predict(served, ["Once", "The sea"], max_new_tokens=50, strategy="sample", seed=3)
    new = [served.tokenizer.sp.encode(t.removeprefix(p)) for t, p in zip(texts, ["Once", "The sea"])]
    assert all(len(ids) <= 2 for ids in new), texts  # one token each (two pieces at most once decoded)
    monkeypatch.setitem(served.limits, "time_limit_s", 60.0)
    long = predict(served, ["Once"], max_new_tokens=50, strategy="greedy", top_k=0, top_p=0, temperature=0)
    assert len(served.tokenizer.sp.encode(long[0].removeprefix("Once"))) > 2


def test_generation_stops_once_the_request_is_cancelled(served):
    """A server sets the request's CANCELLED event when the client disconnects: rows stop at the next token."""
    import threading

    from pipeline.pyfunc import CANCELLED

    gone = threading.Event()
    gone.set()
    token = CANCELLED.set(gone)
    try:
        texts = predict(served, ["Once", "The sea"], max_new_tokens=50, strategy="greedy", temperature=0)
    finally:
        CANCELLED.reset(token)
    new = [served.tokenizer.sp.encode(t.removeprefix(p)) for t, p in zip(texts, ["Once", "The sea"])]
    assert all(len(ids) <= 2 for ids in new), texts
    assert QuillTextGenerator.cancelled is CANCELLED, "where flows/model_server.py finds the signal"
    again = predict(served, ["Once"], max_new_tokens=50, strategy="greedy", temperature=0)
    assert len(served.tokenizer.sp.encode(again[0].removeprefix("Once"))) > 2, "the next request is not cancelled"
