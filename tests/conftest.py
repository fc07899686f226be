"""Shared fixtures: a small hermetic corpus, isolated MLflow/Prefect state, tiny configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"

# Keep every test off the user's stores and off the network.
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

STORIES = [
    "Once upon a time a small fox lived at the edge of a birch forest. Every morning she ran to the river to watch the fish.",
    "The lighthouse keeper climbed the stairs each night. He counted the steps, one hundred and twelve, and lit the lamp for the ships.",
    "Grandmother baked bread on Sundays. The children sat by the oven and listened to her stories about the old mill and the miller's cat.",
    "A robot named Pell swept the station platform. When the last train left, Pell looked at the stars and wondered where the rails ended.",
    "In the winter the pond froze, and the ducks walked on the ice as if it were a floor made of glass. They slipped and laughed and slipped again.",
    "The market opened at dawn. Merchants called out the prices of apples, pears and plums, and a boy with a drum marched between the stalls.",
    "A girl found a key in the sand. It opened nothing she knew, so she kept it in her pocket and imagined a door waiting for it somewhere.",
    "The old boat had a blue sail with a patch shaped like a star. Every summer the family sailed it to the island where the gulls nested.",
]
POEM = "The moon is a coin\nin the pocket of night;\nshe spends it on rivers\nand keeps back the light.\n\nThe owl counts the change\nin the hush of the pine,\nand nobody asks\nwhere the silver will shine."


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """A small mixed-format corpus with one malformed JSONL line and an exact duplicate."""
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "stories.txt").write_text("\n<|endoftext|>\n".join(STORIES * 3) + "\n", encoding="utf-8")
    (d / "poems.txt").write_text(POEM + "\n%\n" + POEM.replace("moon", "sun") + "\n", encoding="utf-8")
    lines = [json.dumps({"text": s.upper(), "kind": "shout"}) for s in STORIES[:3]]
    lines.insert(1, '{"text": "broken')
    (d / "extra.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (d / "README.md").write_text("This folder's documentation is not corpus.\n")
    return d


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="module")
def corpus_dir_module(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus") / "corpus"
    d.mkdir()
    (d / "stories.txt").write_text("\n<|endoftext|>\n".join(STORIES * 3) + "\n", encoding="utf-8")
    (d / "poems.txt").write_text((POEM + "\n%\n") * 4, encoding="utf-8")
    return d
