"""Quill's model package: the GPT, text generation on token ids, and checkpoints."""

from .checkpoint import load_checkpoint, load_train_state, save_checkpoint
from .device import resolve_device
from .generate import SamplingConfig, generate, stream
from .gpt import GPT, GPTConfig, KVCache

__all__ = ["GPT", "GPTConfig", "KVCache", "SamplingConfig", "generate", "stream",
           "save_checkpoint", "load_checkpoint", "load_train_state", "resolve_device"]
