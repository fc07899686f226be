"""MLflow pyfunc "text generator" logged as models-from-code; the checkpoint folder is its artifact.

    model = mlflow.pyfunc.load_model("models:/quill@champion")
    model.predict(pd.DataFrame({"prompt": ["Once upon a time"]}), params={"max_new_tokens": 40, "seed": 1})

Nothing is pickled: MLflow stores this file and the checkpoint folder (safetensors weights,
configs, tokenizer), and `load_context` rebuilds the model from them. The input is a column of
prompts: a DataFrame column `prompt` (or a one-column DataFrame), a Series, or a list of str (the
signature's input is one unnamed string column, so MLflow accepts all of these); the output is
one text per prompt, the prompt followed by what the model wrote. The params are those of the
signature (`PARAMS`, the shared sampling settings of model/sampling.py): a request may set any
of them, the rest keep the defaults that `quill generate` and the evaluate stage use too.

A request cannot exhaust the server: `LIMITS` (overridden by the model_config the register stage logs,
from register.serve_*) caps max_new_tokens, the prompts' length and count, and the seconds one request
may generate for; past that time every row stops where it is. Generation also stops at the next token
once the request's cancel event (`CANCELLED`, set by `quill serve-model` when the client disconnects)
is set. Values beyond the caps, NaN or infinite numbers and unknown param names are answered with HTTP
400: `quill serve-model` refuses unknown names at the door, called in-process they are refused here
(`mlflow models serve` drops names outside the signature, with a warning, before they reach `predict`).

This file must not import `pipeline`: a served model needs only `model` (logged with it as code).
"""

import math
import threading
import time
from contextvars import ContextVar
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from model.sampling import SETTINGS

# The sampling settings and defaults of `quill generate` and the evaluate stage (model/sampling.py).
PARAMS = dict(SETTINGS)
DEFAULT_PARAMS = PARAMS  # the earlier name
LIMITS = {"max_new_tokens": 512, "max_prompt_chars": 4000, "max_prompts": 64, "time_limit_s": 30.0}
# The event a server sets when the request's client went away (the context is copied into the worker thread).
CANCELLED: ContextVar[threading.Event | None] = ContextVar("quill_request_cancelled", default=None)


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def check_request(prompts: list[str], params: dict[str, Any] | None, limits: dict[str, Any]) -> None:
    """Refuse (HTTP 400) what would run unbounded or mean nothing: see the module docstring."""
    if len(prompts) > limits["max_prompts"]:
        raise _invalid(f"{len(prompts)} prompts in one request; at most {limits['max_prompts']}")
    longest = max(map(len, prompts), default=0)
    if longest > limits["max_prompt_chars"]:
        raise _invalid(f"a prompt of {longest} characters; at most {limits['max_prompt_chars']}")
    for key, value in (params or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise _invalid(f"param {key} is {value}; give a finite number")
    asked = (params or {}).get("max_new_tokens")
    if asked is not None and int(asked) > limits["max_new_tokens"]:
        raise _invalid(f"max_new_tokens={asked} is over this server's limit of {limits['max_new_tokens']}")


def prompts_of(model_input: Any) -> list[str]:
    """The prompts in a DataFrame (column `prompt`, or its only column), a Series, a list, or one str."""
    if isinstance(model_input, pd.DataFrame):
        if "prompt" in model_input.columns:
            return [str(p) for p in model_input["prompt"]]
        if len(model_input.columns) == 1:
            return [str(p) for p in model_input.iloc[:, 0]]
        raise MlflowException(f"expected a column 'prompt', got columns {list(model_input.columns)}",
                              error_code=INVALID_PARAMETER_VALUE)
    if isinstance(model_input, str):
        return [model_input]
    return [str(p) for p in model_input]


def sampling_config(params: dict[str, Any] | None, eos_id: int):
    """A SamplingConfig from request params over PARAMS; top_k, top_p and min_p of 0 switch them off.

    Bad values raise MlflowException(INVALID_PARAMETER_VALUE), which the scoring server answers
    with HTTP 400 and the message, instead of a 500.
    """
    from model.sampling import SamplingConfig

    try:
        return SamplingConfig.from_settings(params, eos_id=eos_id)
    except (TypeError, ValueError) as exc:
        raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc


class QuillTextGenerator(PythonModel):
    cancelled = CANCELLED  # where a server finds this model's cancel signal (flows/model_server.py)

    def load_context(self, context) -> None:
        """Build the GPT and its tokenizer from the logged checkpoint folder."""
        from model import load_checkpoint
        from model.tokenizer import Tokenizer

        ckpt = context.artifacts["checkpoint"]
        self.model, _, _ = load_checkpoint(ckpt)
        self.tokenizer = Tokenizer(f"{ckpt}/tokenizer.model")
        given = getattr(context, "model_config", None) or {}
        self.limits = {k: type(v)(given.get(k, v)) for k, v in LIMITS.items()}

    # The pd.DataFrame hint is one MLflow infers no schema from: the logged signature stays the
    # contract, and MLflow stops warning that predict has no type hints.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        """One text per prompt: the prompt and its continuation, sampled with `params`."""
        from model import generate

        prompts = prompts_of(model_input)
        if not prompts:
            return []
        limits = getattr(self, "limits", LIMITS)
        check_request(prompts, params, limits)
        cfg = sampling_config(params, self.tokenizer.eos_id)
        # A prompt is the start of a document: after an eos, as in the training stream (and as
        # the evaluate stage samples), which also gives an empty prompt a context.
        ids = [self.tokenizer.encode_prompt(p) for p in prompts]
        deadline = time.monotonic() + limits["time_limit_s"]
        gone = CANCELLED.get() or threading.Event()
        outs = generate(self.model, ids, cfg, stop=lambda _: gone.is_set() or time.monotonic() > deadline)
        return [p + self.tokenizer.decode_continuation(i, new) for p, i, new in zip(prompts, ids, outs)]


mlflow.models.set_model(QuillTextGenerator())
