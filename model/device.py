"""Which device to run on: 'auto' picks cuda, then mps, then cpu; under torchrun each rank takes its own GPU."""

from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda":
        return torch.device("cuda", local_rank)  # one GPU per rank under torchrun
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
