"""MLflow pyfunc "text generator" logged as models-from-code; the checkpoint folder is its artifact.

    model = mlflow.pyfunc.load_model("models:/quill@champion")
    model.predict(pd.DataFrame({"prompt": ["Once upon a time"]}), params={"max_new_tokens": 40})

Nothing is pickled: MLflow stores this file and the checkpoint folder (safetensors weights,
configs, tokenizer), and `load_context` rebuilds the model from them.
"""

from __future__ import annotations

import warnings

import mlflow
from mlflow.pyfunc import PythonModel

# The signature is given explicitly (with params); MLflow's advice to add type hints is noise here.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")

DEFAULT_PARAMS = {"max_new_tokens": 60, "temperature": 0.8, "top_k": 50, "top_p": 0.95, "seed": 0, "strategy": "sample"}


class QuillTextGenerator(PythonModel):
    def load_context(self, context) -> None:
        from model import load_checkpoint
        from model.tokenizer import Tokenizer

        ckpt = context.artifacts["checkpoint"]
        self.model, _, _ = load_checkpoint(ckpt)
        self.tokenizer = Tokenizer(f"{ckpt}/tokenizer.model")

    def predict(self, context, model_input, params=None) -> list[str]:
        from model import SamplingConfig, generate

        p = {**DEFAULT_PARAMS, **(params or {})}
        prompts = list(model_input["prompt"]) if hasattr(model_input, "columns") else list(model_input)
        cfg = SamplingConfig(
            strategy=p["strategy"], max_new_tokens=int(p["max_new_tokens"]), temperature=float(p["temperature"]),
            top_k=int(p["top_k"]) or None, top_p=float(p["top_p"]) or None, seed=int(p["seed"]),
            eos_id=self.tokenizer.eos_id,
        )
        ids = [self.tokenizer.encode(str(prompt)) for prompt in prompts]
        return [str(prompt) + self.tokenizer.decode(new) for prompt, new in zip(prompts, generate(self.model, ids, cfg))]


mlflow.models.set_model(QuillTextGenerator())
