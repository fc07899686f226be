"""Quill's model package: the GPT, text generation on token ids, sampling settings, checkpoints, export."""

from .checkpoint import load_checkpoint, load_train_state, save_checkpoint
from .device import resolve_device
from .generate import generate, stream
from .gpt import GPT, GPTConfig, KVCache
from .sampling import SamplingConfig

__all__ = ["GPT", "GPTConfig", "KVCache", "SamplingConfig", "generate", "stream",
           "save_checkpoint", "load_checkpoint", "load_train_state", "resolve_device"]
