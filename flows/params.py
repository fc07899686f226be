"""Flow parameters: pydantic models that the Prefect UI renders as forms and validates server-side.

    FlowParams(preset="tiny", overrides=["train.max_steps=500"]).config()   # -> RunConfig
    StageParams(run_folder="tiny").resolve("train")                            # -> cfg, inputs, out

Both resolve to the same config tree as `quill run` / `quill stage`: preset <- TOML file <- overrides.
"""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator

from pipeline import STAGES
from pipeline.config import RENAMED, RunConfig, apply_overrides, load_config


def override_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key a `section.key=value` override may set; a dict-valued field ends in '.*' (any sub-key)."""
    keys = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            keys += override_keys(kind, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}" + (".*" if typing.get_origin(kind) is dict else ""))
    return keys


def override_pattern() -> str:
    """A regular expression of `key=value` for the known keys (and renamed sections' old names): the form's
    JSON schema carries it, so Prefect's "Validate parameters" refuses a misspelled key before a run starts."""
    alternatives = [re.escape(k).replace(r"\.\*", r"\.[^=]+") for k in override_keys()]
    alternatives += [re.escape(old) + r"\.[^=]+" for old in RENAMED]
    return rf"^\s*({'|'.join(alternatives)})\s*=.*$"


OVERRIDE_PATTERN = override_pattern()


class ConfigParams(BaseModel):
    """Which config: a preset, an optional TOML file over it, then `section.key=value` overrides."""

    preset: Literal["tiny", "small", "writer", "base"] = Field("tiny", description="Config preset.")
    overrides: list[str] = Field(default_factory=list, description="Config overrides, e.g. train.max_steps=500 or "
                                 "filter.offensive.threshold=0.4 (`quill config` lists every key).",
                                 json_schema_extra={"items": {"type": "string", "pattern": OVERRIDE_PATTERN}})
    config_file: str | None = Field(None, description="A TOML config file applied over the preset (path on the machine "
                                    "running the flow).")
    # Not `run_name`: the Prefect form already has a "Run name" field (the flow run's).
    run_folder: str | None = Field(None, title="Run folder", description="Folder under data/runs/ (default: the preset "
                                   "name); reruns reuse its finished stages.",
                                   validation_alias=AliasChoices("run_folder", "run_name"))
    train_processes: int = Field(1, ge=1, description="Processes the train stage runs on (torchrun + DDP; one per "
                                 "GPU). 1: in the flow's process.")

    @field_validator("overrides")
    @classmethod
    def _known_keys_and_values(cls, overrides: list[str]) -> list[str]:
        """Each override names a known key and gives it a value of the right type (checked against the defaults)."""
        keys = override_keys()
        for item in overrides:
            if not re.match(OVERRIDE_PATTERN, item):
                key = item.partition("=")[0].strip()
                close = difflib.get_close_matches(key, [k.removesuffix(".*") for k in keys], n=3)
                hint = f"did you mean {' or '.join(close)}?" if close else "`quill config` lists them"
                raise ValueError(f"override {item!r}: unknown key {key!r}; {hint}")
        data = RunConfig().model_dump()
        RunConfig.model_validate(apply_overrides(data, list(overrides)))  # a bad value fails here, named by pydantic
        return overrides

    def config(self) -> RunConfig:
        return load_config(self.preset, self.config_file, self.overrides)

    def run_dir(self, cfg: RunConfig) -> Path:
        return Path(cfg.data_root) / (self.run_folder or cfg.preset)


class FlowParams(ConfigParams):
    """What a whole corpus-to-model run needs."""

    sources: list[str] = Field(default_factory=list,
                               description="Corpus files, folders or globs (empty: the preset's).")

    def config(self) -> RunConfig:
        cfg = super().config()
        if self.sources:
            cfg.sources = self.sources
        return cfg


class StageParams(ConfigParams):
    """One stage, as `quill stage` runs it; by default it reads and writes the folder `run_folder`."""

    input: list[str] = Field(
        default_factory=list,
        description="The previous stage's manifest.json (ingest: corpus files, folders or globs). "
        "Empty: <run folder>/<previous stage>/manifest.json (ingest: the config's sources).",
    )
    out: str | None = Field(None, description="Output folder (empty: <run folder>/<stage>).")
    force: bool = Field(False, description="Recompute even if the stage's manifest is up to date.")

    def resolve(self, stage: str) -> tuple[RunConfig, list[str], str]:
        """The config, the stage's inputs and its output folder."""
        cfg = self.config()
        root = self.run_dir(cfg)
        if stage == "ingest":
            inputs = self.input or cfg.sources
        else:
            inputs = self.input or [str(root / STAGES[STAGES.index(stage) - 1] / "manifest.json")]
            if len(inputs) != 1:
                raise ValueError(f"stage {stage!r} takes exactly one input manifest, got {len(inputs)}")
        return cfg, inputs, self.out or str(root / stage)
