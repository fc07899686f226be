"""The one set of sampling settings and their defaults, shared by `quill generate`, the served pyfunc
and the evaluate stage (no torch here, so the CLI can show the defaults without importing it).

Every front end passes only what its user set; `SamplingConfig.from_settings` fills the rest from
the defaults below. In settings, 0 switches top_k, top_p and min_p off (forms and JSON have no None).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

STRATEGIES = ("greedy", "sample", "beam")


@dataclass
class SamplingConfig:
    strategy: str = "sample"  # "greedy" | "sample" | "beam"
    max_new_tokens: int = 100
    temperature: float = 0.8  # 0 means greedy
    top_k: int | None = 50
    top_p: float | None = 0.95
    min_p: float | None = None  # drop tokens less likely than min_p * the likeliest one
    # CTRL-style: divide positive logits / multiply negative ones of already-seen tokens
    repetition_penalty: float = 1.0
    no_repeat_ngram: int = 0  # 0 = off; else ban tokens that would repeat an n-gram
    num_beams: int = 4
    seed: int | None = None
    eos_id: int | None = None

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.num_beams < 1 or self.max_new_tokens < 0 or self.no_repeat_ngram < 0:
            raise ValueError("num_beams must be >= 1, max_new_tokens and no_repeat_ngram >= 0")

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None = None, **fixed: Any) -> SamplingConfig:
        """SETTINGS, overridden by the settings that are not None (0 = off for top_k, top_p, min_p).

        Values are coerced to the field's type, so strings from a form or a query work; an unknown
        name or a bad value raises ValueError naming it.
        """
        given = {k: v for k, v in {**(settings or {}), **fixed}.items() if v is not None}
        unknown = set(given) - set(SETTINGS) - {"eos_id"}
        if unknown:
            raise ValueError(f"unknown sampling settings {sorted(unknown)}; known: {sorted(SETTINGS)}")
        values = {}
        for name, value in {**SETTINGS, **given}.items():
            kind = _KINDS.get(name, int)
            try:
                value = kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"sampling setting {name}={value!r} is not a {kind.__name__}") from None
            values[name] = None if name in OFF_AT_ZERO and value == 0 else value
        return cls(**values)


# What a user may set, with the default each front end shows: None becomes 0 (= off) where 0 means off.
OFF_AT_ZERO = ("top_k", "top_p", "min_p")
_KINDS = {"strategy": str, "temperature": float, "top_p": float, "min_p": float, "repetition_penalty": float}
SETTINGS: dict[str, Any] = {
    f.name: (_KINDS.get(f.name, int)(0) if f.default is None and f.name in OFF_AT_ZERO else f.default)
    for f in dataclasses.fields(SamplingConfig) if f.name != "eos_id"
}
SETTINGS["seed"] = 0  # front ends are reproducible by default; generate() itself accepts None (unseeded)
