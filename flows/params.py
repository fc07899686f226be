"""Flow parameters: pydantic models that the Prefect UI renders as forms and validates server-side.

    FlowParams(preset="tiny", overrides=["train.max_steps=500"]).config()   # -> RunConfig
    StageParams(run_name="tiny").resolve("train")                            # -> cfg, inputs, out

Both resolve to the same config tree as `quill run` / `quill stage`: preset <- TOML file <- overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from pipeline import STAGES
from pipeline.config import RunConfig, load_config


class ConfigParams(BaseModel):
    """Which config: a preset, an optional TOML file over it, then `section.key=value` overrides."""

    preset: Literal["tiny", "small", "writer", "base"] = Field("tiny", description="Config preset.")
    overrides: list[str] = Field(default_factory=list, description="Config overrides, e.g. train.max_steps=500 or "
                                 "filter.offensive.threshold=0.4.")
    config_file: str | None = Field(None, description="A TOML config file applied over the preset (path on the machine "
                                    "running the flow).")
    run_name: str | None = Field(None, description="Folder under data/runs/ (default: the preset name); reruns reuse "
                                 "its finished stages.")
    train_processes: int = Field(1, ge=1, description="Processes the train stage runs on (torchrun + DDP; one per "
                                 "GPU). 1: in the flow's process.")

    def config(self) -> RunConfig:
        return load_config(self.preset, self.config_file, self.overrides)

    def run_dir(self, cfg: RunConfig) -> Path:
        return Path(cfg.data_root) / (self.run_name or cfg.preset)


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
    """One stage, as `quill stage` runs it; by default it reads and writes the run folder of `run_name`."""

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
