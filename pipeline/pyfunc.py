"""MLflow pyfunc "text generator" logged as models-from-code; the checkpoint folder is its artifact.

    model = mlflow.pyfunc.load_model("models:/quill@champion")
    model.predict(pd.DataFrame({"prompt": ["Once upon a time"]}), params={"max_new_tokens": 40, "seed": 1})

Nothing is pickled: MLflow stores this file and the checkpoint folder (safetensors weights,
configs, tokenizer), and `load_context` rebuilds the model from them. The input is a column of
prompts: a DataFrame column `prompt` (or a one-column DataFrame), a Series, or a list of str (the
signature's input is one unnamed string column, so MLflow accepts all of these); the output is
one text per prompt, the prompt followed by what the model wrote. The params are those of the
signature (`PARAMS`): a request may set any of them, the rest keep these defaults.

This file must not import `pipeline`: a served model needs only `model` (logged with it as code).
"""

from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

PARAMS = {"max_new_tokens": 60, "temperature": 0.8, "top_k": 50, "top_p": 0.95, "seed": 0, "strategy": "sample"}
DEFAULT_PARAMS = PARAMS  # the earlier name


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
    """A SamplingConfig from request params over PARAMS; top_k/top_p of 0 switch them off.

    Bad values raise MlflowException(INVALID_PARAMETER_VALUE), which the scoring server answers
    with HTTP 400 and the message, instead of a 500.
    """
    from model import SamplingConfig

    p = {**PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
    unknown = set(p) - set(PARAMS)
    if unknown:
        raise MlflowException(f"unknown params {sorted(unknown)}; known: {sorted(PARAMS)}",
                              error_code=INVALID_PARAMETER_VALUE)
    try:
        return SamplingConfig(
            strategy=str(p["strategy"]), max_new_tokens=int(p["max_new_tokens"]), temperature=float(p["temperature"]),
            top_k=int(p["top_k"]) or None, top_p=float(p["top_p"]) or None, seed=int(p["seed"]), eos_id=eos_id,
        )
    except (TypeError, ValueError) as exc:
        raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc


class QuillTextGenerator(PythonModel):
    def load_context(self, context) -> None:
        """Build the GPT and its tokenizer from the logged checkpoint folder."""
        from model import load_checkpoint
        from model.tokenizer import Tokenizer

        ckpt = context.artifacts["checkpoint"]
        self.model, _, _ = load_checkpoint(ckpt)
        self.tokenizer = Tokenizer(f"{ckpt}/tokenizer.model")

    # The pd.DataFrame hint is one MLflow infers no schema from: the logged signature stays the
    # contract, and MLflow stops warning that predict has no type hints.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        """One text per prompt: the prompt and its continuation, sampled with `params`."""
        from model import generate

        prompts = prompts_of(model_input)
        if not prompts:
            return []
        cfg = sampling_config(params, self.tokenizer.eos_id)
        # A prompt is the start of a document: after an eos, as in the training stream (and as
        # the evaluate stage samples), which also gives an empty prompt a context.
        ids = [self.tokenizer.encode_prompt(p) for p in prompts]
        outs = generate(self.model, ids, cfg)
        return [p + self.tokenizer.decode_continuation(i, new) for p, i, new in zip(prompts, ids, outs)]


mlflow.models.set_model(QuillTextGenerator())
