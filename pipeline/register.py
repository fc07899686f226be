"""Register: log the pyfunc text generator to MLflow, register a version, and gate the champion alias.

    quill stage register --input data/runs/dev/evaluate/manifest.json --out data/runs/dev/register

Every registration sets alias `challenger`; `champion` moves to the new version only when its
validation bits per byte beat the champion's by `margin` (the first version becomes champion).
The decision and metrics go to version tags. Registering the same evaluation twice returns the
existing version (looked up by a tag holding the evaluation manifest's sha256).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.config import RegisterConfig
from pipeline.manifest import Manifest, input_refs, read_manifest, run_stage
from pipeline.tracking import MlflowTracker, configure

log = logging.getLogger(__name__)
PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")


def register(eval_manifest: Path, out_dir: Path, cfg: RegisterConfig, run_id: str | None = None, force: bool = False) -> Manifest:
    inputs = input_refs([eval_manifest])
    return run_stage("register", out_dir, inputs, cfg,
                     lambda tmp: _register(Path(eval_manifest), inputs[0].sha256, tmp, cfg, run_id), force=force)


def manifest_chain(manifest: Manifest) -> list[Manifest]:
    """This manifest and every upstream one, following `inputs` (lineage from model to data)."""
    chain, todo = [], [manifest]
    while todo:
        m = todo.pop()
        chain.append(m)
        todo.extend(read_manifest(ref.path) for ref in m.inputs if ref.path.endswith("manifest.json"))
    return chain


def gate(candidate_bpb: float, champion_bpb: float | None, margin: float) -> tuple[bool, str]:
    if champion_bpb is None:
        return True, "first version: becomes champion"
    if candidate_bpb < champion_bpb - margin:
        return True, f"val_bpb {candidate_bpb:.4f} beats champion {champion_bpb:.4f} by more than {margin}"
    return False, f"val_bpb {candidate_bpb:.4f} does not beat champion {champion_bpb:.4f} by more than {margin}"


def _existing_version(client, name: str, eval_sha: str):
    for mv in client.search_model_versions(f"name='{name}'"):
        if mv.tags.get("quill.eval_sha256") == eval_sha:
            return mv
    return None


def _register(eval_manifest: Path, eval_sha: str, stage_dir: Path, cfg: RegisterConfig, run_id: str | None):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    from pipeline.pyfunc import DEFAULT_PARAMS

    configure()
    client = MlflowClient()
    eval_m = read_manifest(eval_manifest)
    train_m = read_manifest(eval_m.inputs[0].path)
    metrics = eval_m.stats
    mv = _existing_version(client, cfg.model_name, eval_sha)
    if mv is None:
        run_id = run_id or train_m.stats.get("mlflow_run_id")
        tracker = MlflowTracker(run_id) if run_id else MlflowTracker.start(cfg.experiment, "register")
        tracker.log_metrics({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step=0)
        for m in manifest_chain(eval_m):
            tracker.log_artifact(m.path, f"manifests/{m.stage}")
        for name in ("report", "samples", "metrics"):
            tracker.log_artifact(eval_m.output(name), "evaluation")
        example = pd.DataFrame({"prompt": ["Once upon a time"]})
        signature = infer_signature(example, ["Once upon a time there was a fox."], params=DEFAULT_PARAMS)
        with mlflow.start_run(run_id=tracker.run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(PYFUNC_FILE), artifacts={"checkpoint": str(train_m.output("checkpoint"))},
                signature=signature, input_example=(example, DEFAULT_PARAMS),
            )
        mv = mlflow.register_model(info.model_uri, cfg.model_name, tags={"quill.eval_sha256": eval_sha})
    try:
        champion = client.get_model_version_by_alias(cfg.model_name, "champion")
        champion_bpb = float(champion.tags["val_bpb"]) if champion.version != mv.version else None
    except MlflowException:
        champion, champion_bpb = None, None
    if champion is not None and champion.version == mv.version:
        promote, why = True, "already champion"
    else:
        promote, why = gate(metrics["val_bpb"], champion_bpb, cfg.margin)
    client.set_registered_model_alias(cfg.model_name, "challenger", mv.version)
    if promote:
        client.set_registered_model_alias(cfg.model_name, "champion", mv.version)
    tags = {"val_bpb": f"{metrics['val_bpb']:.6f}", "val_loss": f"{metrics['val_loss']:.6f}",
            "gate.decision": "promoted" if promote else "kept_champion", "gate.reason": why}
    for key, value in tags.items():
        client.set_model_version_tag(cfg.model_name, mv.version, key, value)
    log.info("register: %s version %s: %s", cfg.model_name, mv.version, why)
    result = {"model_name": cfg.model_name, "version": int(mv.version), "run_id": mv.run_id, "champion": promote,
              "decision": why, "model_uri": f"models:/{cfg.model_name}/{mv.version}"}
    (stage_dir / "registration.json").write_text(json.dumps(result, indent=2))
    return {"registration": "registration.json"}, result
