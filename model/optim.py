"""Optimizers for GPT: AdamW alone, or Muon for the hidden weight matrices with AdamW for the rest.

Muon (Keller Jordan's optimizer of the modded-nanogpt speedrun; torch.optim.Muon) takes SGD
momentum and replaces each 2-D update by its nearest semi-orthogonal matrix (Newton-Schulz), so
every direction of a matrix moves at the same rate. It suits the matrices that map one hidden
space to another: the blocks' attention and MLP weights. Embeddings and the (tied) output head
are look-up tables, gains are vectors: those stay on AdamW. Muon runs with adjust_lr_fn
"match_rms_adamw", which scales its update to AdamW's typical RMS, so one learning-rate
schedule serves both; a group's `lr_scale` multiplies the scheduled rate (train_step applies it).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "muon")


class Optimizers:
    """Several torch optimizers stepped, zeroed, saved and restored as one."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("optimizers")
        if saved is None or len(saved) != len(self.optimizers):
            raise ValueError(f"optimizer state holds {0 if saved is None else len(saved)} optimizers, "
                             f"this run has {len(self.optimizers)}")
        for o, s in zip(self.optimizers, saved):
            o.load_state_dict(s)


def hidden_matrices(model: nn.Module) -> list[str]:
    """Names of the 2-D weights inside the Transformer blocks (what Muon updates)."""
    return [n for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("transformer.h.")]


def build_optimizer(model: nn.Module, kind: str, *, lr: float, weight_decay: float, betas: tuple[float, float],
                    device_type: str, muon_lr: float | None = None, muon_momentum: float = 0.95):
    """AdamW over every parameter (matrices decayed, biases and gains not), or Muon + AdamW.

    muon_lr (default lr) is in AdamW-equivalent units (see the module docstring).
    """
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    muon_names = set(hidden_matrices(model)) if kind == "muon" else set()
    muon = [p for n, p in named if n in muon_names]
    decay = [p for n, p in named if p.dim() >= 2 and n not in muon_names]
    no_decay = [p for n, p in named if p.dim() < 2]
    log.info("optimizer: %d tensors on Muon (%d params), %d decayed on AdamW (%d), %d not decayed (%d)",
             len(muon), sum(p.numel() for p in muon), len(decay), sum(p.numel() for p in decay),
             len(no_decay), sum(p.numel() for p in no_decay))
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    adamw = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type == "cuda")
    if kind == "adamw":
        return adamw
    scale = (muon_lr or lr) / lr
    m = torch.optim.Muon([{"params": muon, "lr_scale": scale}], lr=lr * scale, weight_decay=weight_decay,
                         momentum=muon_momentum, nesterov=True, adjust_lr_fn="match_rms_adamw")
    return Optimizers([m, adamw])
