"""Checkpoints: a self-describing folder that holds everything needed to load and sample a model.

    model.safetensors    weights (a tied lm_head is stored once, as the token embedding)
    model_config.json    the GPTConfig fields
    tokenizer.model      the SentencePiece model the token ids belong to
    train_config.json    the run's settings (may be {})
    train_state.pt       optimizer / scheduler / RNG / data position, to resume (optional)

Saving is atomic as far as a directory can be on POSIX: the folder is written in full under a
temporary sibling name, the old folder is renamed aside, the new one renamed into place, and only
then is the old one removed. A kill at any point leaves the previous good checkpoint either in
place or (between the two renames) as the `.NAME.old` sibling, which load_checkpoint falls back to.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import load_file, save_file

from .gpt import GPT, GPTConfig

log = logging.getLogger(__name__)

WEIGHTS, MODEL_CONFIG, TOKENIZER = "model.safetensors", "model_config.json", "tokenizer.model"
TRAIN_CONFIG, TRAIN_STATE = "train_config.json", "train_state.pt"
TIED_KEY, EMBEDDING_KEY = "lm_head.weight", "transformer.wte.weight"


def _sibling(ckpt_dir: Path, suffix: str) -> Path:
    return ckpt_dir.parent / f".{ckpt_dir.name}.{suffix}"


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def _fsync_tree(folder: Path) -> None:
    """Flush the files' contents to disk before the rename publishes them."""
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def save_checkpoint(ckpt_dir, model: GPT, model_cfg: GPTConfig, tokenizer_path, *,
                    train_config: dict | None = None, train_state: dict | None = None) -> Path:
    """Write the checkpoint folder ckpt_dir atomically (replacing any previous one) and return its path."""
    ckpt_dir = Path(ckpt_dir)
    tokenizer_path = Path(tokenizer_path)
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper would prefix every key
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"tokenizer model {tokenizer_path} does not exist")
    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = _sibling(ckpt_dir, "tmp"), _sibling(ckpt_dir, "old")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a save that was killed
    tmp.mkdir()
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if model_cfg.tie_weights:
            state.pop(TIED_KEY, None)  # safetensors refuses shared storage; load re-ties it
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        _write_json(tmp / MODEL_CONFIG, asdict(model_cfg))
        shutil.copyfile(tokenizer_path, tmp / TOKENIZER)
        _write_json(tmp / TRAIN_CONFIG, train_config or {})
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE)
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if ckpt_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(ckpt_dir, old)
    os.replace(tmp, ckpt_dir)
    shutil.rmtree(old, ignore_errors=True)
    log.info("saved checkpoint %s", ckpt_dir)
    return ckpt_dir


def _resolve(ckpt_dir) -> Path:
    """ckpt_dir, or the previous checkpoint that a save killed between its two renames left aside."""
    ckpt_dir = Path(ckpt_dir)
    old = _sibling(ckpt_dir, "old")
    if not ckpt_dir.exists() and old.is_dir():
        log.warning("checkpoint %s missing; using %s left by an interrupted save", ckpt_dir, old)
        return old
    return ckpt_dir


def load_checkpoint(ckpt_dir, device: str = "cpu") -> tuple[GPT, GPTConfig, dict]:
    """(model in eval mode on device, its GPTConfig, the train_config dict) from a checkpoint folder."""
    folder = _resolve(ckpt_dir)
    missing = [name for name in (WEIGHTS, MODEL_CONFIG, TOKENIZER) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{ckpt_dir} is not a complete checkpoint: missing {', '.join(missing)}")
    raw = json.loads((folder / MODEL_CONFIG).read_text(encoding="utf-8"))
    unknown = set(raw) - {f.name for f in fields(GPTConfig)}
    if unknown:
        raise ValueError(f"{folder / MODEL_CONFIG} has fields GPTConfig does not know: {sorted(unknown)}")
    cfg = GPTConfig(**raw)
    n_pieces = spm.SentencePieceProcessor(model_file=str(folder / TOKENIZER)).get_piece_size()
    if n_pieces != cfg.vocab_size:
        raise ValueError(f"tokenizer in {folder} has {n_pieces} pieces but the model's vocab_size is "
                         f"{cfg.vocab_size}; the checkpoint's tokenizer and weights do not belong together")
    try:
        state = load_file(str(folder / WEIGHTS), device=str(device))
    except Exception as exc:  # safetensors' own error type: a truncated or overwritten file
        raise ValueError(f"{folder / WEIGHTS}: cannot read the weights ({exc}); the file is damaged or truncated: "
                         "copy it again, or retrain (quill stage train --force)") from exc
    if cfg.tie_weights:
        state[TIED_KEY] = state[EMBEDDING_KEY]
    model = GPT(cfg).to(device)
    model.load_state_dict(state)  # strict: a missing or unexpected tensor is an error
    model.eval()
    train_config = {}
    if (folder / TRAIN_CONFIG).is_file():
        train_config = json.loads((folder / TRAIN_CONFIG).read_text(encoding="utf-8"))
    return model, cfg, train_config


def load_train_state(ckpt_dir) -> dict | None:
    """The saved training state (tensors and plain containers only), or None if none was saved."""
    path = _resolve(ckpt_dir) / TRAIN_STATE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
