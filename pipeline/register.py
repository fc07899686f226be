"""Register: log the pyfunc text generator to MLflow, register a version, and gate the champion alias.

    quill stage register --input data/runs/dev/evaluate/manifest.json --out data/runs/dev/register

Every registration creates a version of `cfg.model_name` and sets alias `challenger` on it.
`champion` moves to it only when the gate says so (see `gate`): its validation bits per byte beat
the champion's by more than `cfg.margin` and its offensive-sample rate is not worse than the
champion's (plus `cfg.offensive_tolerance`); the first version becomes champion. Registry stages
are never used (deprecated); aliases are. The decision, its reason, the metrics and the policy go
to version tags and to the log, so every version stays auditable.

Lineage: the MLflow run behind a version holds every upstream stage manifest (`manifests/<stage>/`)
and the evaluation report, so a version leads back to its data, tokenizer and config. Each version's
description is its model card (`pipeline.reports.model_card`: data, filters, tokenizer, architecture,
training tokens and FLOPs, bits per byte, bias probes, intended use and limits), which is also the
run's description, the run artifact `MODEL_CARD.md`, and a file in the logged checkpoint folder.

With `move_aliases` off (`quill stage register` without --move-aliases) the version is registered and
the gate's verdict recorded, but no alias moves (decision tag `aliases_unchanged`); registering it
again with the aliases on runs the gate and moves them.

Idempotent: registering the same evaluation again (found by a tag holding the evaluation
manifest's sha256) returns the existing version and its recorded decision, and moves no alias.
The decision tag is written last, so a registration cut short is completed by the next rerun.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pipeline.config import RegisterConfig
from pipeline.manifest import Manifest, read_manifest, run_stage, stage_inputs
from pipeline.reports import model_card
from pipeline.tracking import MlflowTracker, configure

log = logging.getLogger(__name__)
PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")
EVAL_SHA_TAG = "quill.eval_sha256"
DECISION_TAG = "gate.decision"
UNMOVED = "aliases_unchanged"  # the decision tag of a version registered with move_aliases off
MODEL_CARD = "MODEL_CARD.md"
# What the pyfunc imports when it loads; pinned so that logging skips MLflow's requirement
# inference (a subprocess that loads the model: ~10 s here) and a fresh environment gets these.
RUNTIME_PACKAGES = ("mlflow", "torch", "sentencepiece", "safetensors", "numpy", "pandas")


def register(eval_manifest: Path, out_dir: Path, cfg: RegisterConfig, run_id: str | None = None,
             force: bool = False) -> Manifest:
    """Register the model evaluated by `eval_manifest`, run the gate, write registration.json."""
    inputs = stage_inputs(eval_manifest, "register")
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


# --- the gate: pure, no MLflow ------------------------------------------------------------------

@dataclass(frozen=True)
class Scores:
    """What the gate compares. val_bpb is None when unknown (a version registered by hand)."""

    val_bpb: float | None
    offensive_sample_rate: float = 0.0


def scores_from(values: Mapping[str, Any], who: str) -> Scores:
    """Scores from evaluation stats or version tags (strings); a missing offensive rate counts as 0.0.

    Why 0.0 and not "unknown": versions registered before the metric existed must still compare.
    The warning says so, since it makes such a champion hard to beat on that axis.
    """
    rate = _number(values.get("offensive_sample_rate"))
    if rate is None:
        log.warning("register: %s has no offensive_sample_rate; counted as 0.0", who)
    return Scores(_number(values.get("val_bpb")), 0.0 if rate is None else rate)


def _number(value: Any) -> float | None:
    """float(value); None when missing or not a number (a tag typed by hand, say)."""
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def gate(candidate: Scores, champion: Scores | None, margin: float,
         offensive_tolerance: float = 0.0) -> tuple[bool, str]:
    """(promote, reason). Promote when there is no champion yet, or when both hold:
    candidate val_bpb < champion val_bpb - margin, and
    candidate offensive_sample_rate <= champion offensive_sample_rate + offensive_tolerance.

    A candidate without a finite val_bpb is never promoted; a champion without one (set by hand)
    is not compared against, so it keeps the alias until a person moves it.
    """
    if not _finite(candidate.val_bpb):
        return False, f"candidate val_bpb is {candidate.val_bpb}: nothing to compare, not promoted"
    if champion is None:
        return True, "first version: becomes champion"
    if not _finite(champion.val_bpb):
        return False, (f"champion has no usable val_bpb ({champion.val_bpb}; registered by hand?): not compared, "
                       "not promoted; tag the champion with val_bpb or move the alias by hand")
    better = candidate.val_bpb < champion.val_bpb - margin
    cleaner = candidate.offensive_sample_rate <= champion.offensive_sample_rate + offensive_tolerance
    bpb = (f"val_bpb {candidate.val_bpb:.4f} {'beats' if better else 'does not beat'} champion "
           f"{champion.val_bpb:.4f} by more than {margin}")
    rate = (f"offensive_sample_rate {candidate.offensive_sample_rate:.4f} "
            f"{'<=' if cleaner else '>'} champion {champion.offensive_sample_rate:.4f} + {offensive_tolerance}")
    return better and cleaner, f"{bpb}; {rate}"


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# --- MLflow -------------------------------------------------------------------------------------

def pip_requirements() -> list[str]:
    """RUNTIME_PACKAGES pinned to the installed versions (local labels such as +cpu dropped)."""
    pins = []
    for name in RUNTIME_PACKAGES:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def serving_checkpoint(ckpt: Path, tmp: Path) -> Path:
    """The checkpoint folder without its training state: hard links (copies across devices) in tmp/checkpoint.

    Why: train_state.pt (optimizer moments, a pickle) is 2-3x the weights and only resumes training.
    """
    from model.checkpoint import TRAIN_STATE

    out = tmp / "checkpoint"
    out.mkdir()
    for f in Path(ckpt).iterdir():
        if f.is_file() and f.name != TRAIN_STATE:
            try:
                os.link(f, out / f.name)
            except OSError:
                shutil.copy2(f, out / f.name)
    return out


def _existing_version(client, name: str, eval_sha: str):
    found = client.search_model_versions(f"name='{name}' and tags.`{EVAL_SHA_TAG}` = '{eval_sha}'")
    return min(found, key=lambda mv: int(mv.version)) if found else None


def _log_model(eval_m: Manifest, train_m: Manifest, cfg: RegisterConfig, run_id: str | None) -> tuple[str, str]:
    """Log metrics, the manifest chain, the evaluation files and the pyfunc to a run (train's, else a new one
    that is deleted again if logging fails); returns the model URI and the model card."""
    run_id = run_id or train_m.stats.get("mlflow_run_id")
    if run_id:
        return _log_to_run(eval_m, train_m, cfg, MlflowTracker(run_id))
    tracker = MlflowTracker.start(cfg.experiment, "register")
    try:
        return _log_to_run(eval_m, train_m, cfg, tracker)
    except BaseException:
        tracker.client.delete_run(tracker.run_id)  # a run of our own that holds no model: no empty FAILED run
        raise


def _log_to_run(eval_m: Manifest, train_m: Manifest, cfg: RegisterConfig, tracker: MlflowTracker) -> tuple[str, str]:
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    import model as model_pkg
    from pipeline.pyfunc import PARAMS

    card = card_of(eval_m, train_m, cfg)
    tracker.log_metrics({f"eval/{k}": v for k, v in eval_m.stats.items() if isinstance(v, (int, float))}, step=0)
    # Headline metrics, unprefixed like train_tokens and train_flops (the train stage's): charted across runs first.
    tracker.log_metrics({k: eval_m.stats[k] for k in ("val_bpb", "val_bpc") if k in eval_m.stats},
                        step=int(train_m.stats.get("steps", 0)))
    for m in manifest_chain(eval_m):
        tracker.log_artifact(m.path, f"manifests/{m.stage}")
    for name, rel in eval_m.outputs.items():  # the same paths the evaluate stage logs to its tracker, if any
        if isinstance(rel, str) and eval_m.output(name).is_file():
            tracker.log_artifact(eval_m.output(name), "evaluation")
    # One unnamed string column: MLflow then accepts a list of prompts, a Series, or a DataFrame
    # with one column (the example names it `prompt`); a named column would reject plain lists.
    signature = infer_signature(["Once upon a time"], ["Once upon a time there was a fox."], params=PARAMS)
    example = pd.DataFrame({"prompt": ["Once upon a time"]})
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=tracker.run_id):
        ckpt = serving_checkpoint(train_m.output("checkpoint"), Path(tmp))
        (ckpt / MODEL_CARD).write_text(card, encoding="utf-8")  # travels with the weights: `quill export` copies it
        tracker.log_artifact(ckpt / MODEL_CARD)
        tracker.set_tags({"mlflow.note.content": card})  # the run's description in the MLflow UI
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_FILE), artifacts={"checkpoint": str(ckpt)},
            # The model code travels with the weights: a version loads with the code it was registered with.
            code_paths=[str(Path(model_pkg.__file__).parent)],
            signature=signature, input_example=(example, {**PARAMS, "max_new_tokens": 8}),
            model_config=cfg.serve_limits(),
            pip_requirements=pip_requirements(),
        )  # leaving start_run marks the run FINISHED; a flow that owns it ends it again with its own status
    return info.model_uri, card


def card_of(eval_m: Manifest, train_m: Manifest, cfg: RegisterConfig) -> str:
    """The model card of the model that eval_m evaluated (pipeline.reports.model_card over its manifest chain)."""
    from model.checkpoint import MODEL_CONFIG

    manifests = {m.stage: m for m in manifest_chain(eval_m)}
    model_config = json.loads((train_m.output("checkpoint") / MODEL_CONFIG).read_text(encoding="utf-8"))
    return model_card(manifests, model_config, cfg.model_name)


def _champion(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None


def _decide(client, cfg: RegisterConfig, mv, candidate: Scores) -> tuple[bool, str, Any]:
    """Run the gate against the current champion; returns (promote, reason, champion version or None)."""
    champion = _champion(client, cfg.model_name)
    if champion is not None and str(champion.version) == str(mv.version):
        return True, "already champion", champion
    held = scores_from(champion.tags, f"champion version {champion.version}") if champion is not None else None
    promote, why = gate(candidate, held, cfg.margin, cfg.offensive_tolerance)
    return promote, why, champion


def _tags(metrics: Mapping[str, Any], promote: bool, why: str, champion, cfg: RegisterConfig) -> dict[str, str]:
    """Version tags: the measured metrics at full precision (repr round-trips, so a later gate compares
    exactly what this one saw; an unmeasured metric gets no tag), the policy, the champion, the verdict."""
    measured = {k: _number(metrics.get(k)) for k in ("val_bpb", "val_loss", "offensive_sample_rate")}
    tags = {k: repr(v) for k, v in measured.items() if v is not None}
    tags.update({
        "gate.reason": why, "gate.margin": repr(cfg.margin), "gate.offensive_tolerance": repr(cfg.offensive_tolerance),
        "gate.champion_version": str(champion.version) if champion is not None else "none",
    })
    decision = "promoted" if promote else "kept_champion" if cfg.move_aliases else UNMOVED
    tags[DECISION_TAG] = decision  # last: marks the registration complete
    return tags


def _register(eval_manifest: Path, eval_sha: str, stage_dir: Path, cfg: RegisterConfig, run_id: str | None):
    import mlflow
    from mlflow import MlflowClient

    configure()
    client = MlflowClient()
    eval_m = read_manifest(eval_manifest)
    mv = _existing_version(client, cfg.model_name, eval_sha)
    if mv is not None and DECISION_TAG in mv.tags and not (cfg.move_aliases and mv.tags[DECISION_TAG] == UNMOVED):
        log.info("register: evaluation already registered as %s version %s (%s); aliases unchanged",
                 cfg.model_name, mv.version, mv.tags[DECISION_TAG])
        champion = _champion(client, cfg.model_name)
        is_champion = champion is not None and str(champion.version) == str(mv.version)
        return _result(stage_dir, cfg, mv, is_champion, mv.tags.get("gate.reason", ""), mv.tags[DECISION_TAG])
    if mv is None:
        model_uri, card = _log_model(eval_m, read_manifest(eval_m.inputs[0].path), cfg, run_id)
        mv = mlflow.register_model(model_uri, cfg.model_name, tags={EVAL_SHA_TAG: eval_sha})
        client.update_model_version(cfg.model_name, mv.version, description=card)
    candidate = scores_from(eval_m.stats, f"evaluation {eval_manifest}")
    promote, why, champion = _decide(client, cfg, mv, candidate)
    if cfg.move_aliases:
        client.set_registered_model_alias(cfg.model_name, "challenger", mv.version)
        if promote:
            client.set_registered_model_alias(cfg.model_name, "champion", mv.version)
    elif why != "already champion":
        promote, why = False, f"aliases left alone (register.move_aliases off); the gate said: {why}"
    tags = _tags(eval_m.stats, promote, why, champion, cfg)
    for key, value in tags.items():
        client.set_model_version_tag(cfg.model_name, mv.version, key, value)
    log.info("register: %s version %s %s: %s", cfg.model_name, mv.version, tags[DECISION_TAG], why)
    return _result(stage_dir, cfg, mv, promote, why, tags[DECISION_TAG])


def _result(stage_dir: Path, cfg: RegisterConfig, mv, champion: bool, why: str, decision: str):
    result = {"model_name": cfg.model_name, "version": int(mv.version), "run_id": mv.run_id, "champion": champion,
              "decision": why, "gate_decision": decision, "model_uri": f"models:/{cfg.model_name}/{mv.version}"}
    (stage_dir / "registration.json").write_text(json.dumps(result, indent=2))
    return {"registration": "registration.json"}, result
