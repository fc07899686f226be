"""Shared fixtures: a small hermetic corpus, isolated MLflow/Prefect state, tiny configs."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import prefect.main  # noqa: F401  -- set up Prefect logging before any capsys test closes stderr
import pytest
import torch
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"

# Property tests draw the same examples on every run, so a suite that passed passes again (CI must
# not turn red on a lucky draw); HYPOTHESIS_PROFILE=explore draws new ones to hunt for bugs.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore")  # Hypothesis' own default: random draws
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# Keep every test off the user's stores and off the network.
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

STORIES = [
    ("Once upon a time a small fox lived at the edge of a birch forest. "
     "Every morning she ran to the river to watch the fish."),
    ("The lighthouse keeper climbed the stairs each night. "
     "He counted the steps, one hundred and twelve, and lit the lamp for the ships."),
    ("Grandmother baked bread on Sundays. "
     "The children sat by the oven and listened to her stories about the old mill and the miller's cat."),
    ("A robot named Pell swept the station platform. "
     "When the last train left, Pell looked at the stars and wondered where the rails ended."),
    ("In the winter the pond froze, and the ducks walked on the ice as if it were a floor made of glass. "
     "They slipped and laughed and slipped again."),
    ("The market opened at dawn. "
     "Merchants called out the prices of apples, pears and plums, and a boy with a drum marched between the stalls."),
    ("A girl found a key in the sand. "
     "It opened nothing she knew, so she kept it in her pocket and imagined a door waiting for it somewhere."),
    ("The old boat had a blue sail with a patch shaped like a star. "
     "Every summer the family sailed it to the island where the gulls nested."),
]
POEM = ("The moon is a coin\nin the pocket of night;\nshe spends it on rivers\nand keeps back the light.\n\n"
        "The owl counts the change\nin the hush of the pine,\nand nobody asks\nwhere the silver will shine.")


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


# --- MLflow registry fixtures (tests/test_register.py, tests/test_serve.py) ----------------------

@pytest.fixture(scope="session")
def mlflow_blank_db(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its tables created once: migrations take ~8 s per new database."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow_blank")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)  # MLflow puts the Default experiment's artifacts under the cwd: not the repo's mlruns/
        MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


def copy_blank_db(blank: Path, folder: Path) -> str:
    """A fresh store in folder/mlruns/ from the blank database; returns its tracking URI."""
    import shutil
    import sqlite3

    db = folder / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(blank, db)
    with sqlite3.connect(db) as con:  # the Default experiment's artifacts: this store's, not the template's
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                    ((db.parent / "artifacts" / "0").as_uri(),))
    con.close()
    return f"sqlite:///{db}"


@contextlib.contextmanager
def mlflow_at(uri: str):
    """MLFLOW_TRACKING_URI and MLFLOW_REGISTRY_URI at uri inside; on the way out MLflow's global URIs
    (which `configure()` sets, and which win over the environment) are cleared and the variables restored."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        try:
            yield uri
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


@pytest.fixture
def mlflow_registry(tmp_path: Path, mlflow_blank_db: Path):
    """Like mlflow_store (MLFLOW_TRACKING_URI at a fresh store under tmp_path), but starts from the blank database."""
    with mlflow_at(copy_blank_db(mlflow_blank_db, tmp_path)) as uri:
        yield uri


# Clean and filter with every rule that could drop or change a fixture document turned off: tests of the
# later stages read a filter manifest (a stage reads only the stage before it) with the texts they wrote.
PASS_CLEAN = {"unicode_form": "none", "fix_mojibake": False, "strip_boilerplate": False, "min_chars": 1,
              "languages": [], "executor": "local"}
PASS_FILTER = {
    "executor": "local",
    "quality": {"min_words": 0, "min_mean_word_len": 0, "max_mean_word_len": 1e9, "max_symbol_ratio": 1e9,
                "min_alpha_word_ratio": 0, "max_dup_line_ratio": 1, "max_top_ngram_ratio": 1, "min_stopwords": 0},
    "offensive": {"threshold": 1.0}, "pii": {"redact": False}, "dedup": {"exact": False, "near": False},
    "audit": {"enabled": False},
}


def passed_through(ingest_manifest, run: Path):
    """The filter manifest of clean -> filter over `ingest_manifest` keeping every document as it is."""
    from pipeline.clean import clean
    from pipeline.config import CleanConfig, FilterConfig
    from pipeline.filter import filter_docs

    cl = clean(ingest_manifest.path, run / "clean", CleanConfig(**PASS_CLEAN))
    return filter_docs(cl.path, run / "filter", FilterConfig.model_validate(PASS_FILTER))


@pytest.fixture(scope="session")
def tiny_evaluated(tmp_path_factory):
    """The evaluate manifest of ingest -> tokenize -> train (4 steps, 1 layer) -> evaluate on a small corpus."""
    from pipeline.config import EvaluateConfig, IngestConfig, ModelConfig, TokenizeConfig, TrainConfig
    from pipeline.evaluate import evaluate
    from pipeline.ingest import ingest
    from pipeline.tokenize import tokenize
    from pipeline.train import train

    root = tmp_path_factory.mktemp("tiny_evaluated")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "stories.txt").write_text("\n<|endoftext|>\n".join(STORIES * 3) + "\n", encoding="utf-8")
    (corpus / "poems.txt").write_text((POEM + "\n%\n") * 4, encoding="utf-8")
    run = root / "run"
    m = passed_through(ingest([str(corpus)], run / "ingest", IngestConfig()), run)
    m = tokenize(m.path, run / "tokenize", TokenizeConfig(vocab_size=400, val_fraction=0.2))
    m = train(m.path, run / "train", TrainConfig(max_steps=4, batch_size=4, eval_every=4, warmup_steps=1),
              ModelConfig(block_size=32, n_layer=1, n_head=2, n_embd=32))
    # Short bias-probe sampling where the evaluate stage has those knobs (names it does not know are left out).
    quick = {"max_new_tokens": 8, "samples_per_prompt": 1, "bias_samples_per_prompt": 1, "bias_max_new_tokens": 4}
    quick = {k: v for k, v in quick.items() if k in EvaluateConfig.model_fields}
    return evaluate(m.path, run / "evaluate", EvaluateConfig(**quick))


@pytest.fixture(scope="session")
def registered_store(tmp_path_factory, mlflow_blank_db: Path, tiny_evaluated) -> str:
    """A tracking URI whose registry holds `quill` version 1 (champion) from tiny_evaluated; read it, do not write."""
    from pipeline.config import RegisterConfig
    from pipeline.register import register

    root = tmp_path_factory.mktemp("registered")
    uri = copy_blank_db(mlflow_blank_db, root)
    with mlflow_at(uri):
        register(tiny_evaluated.path, root / "register", RegisterConfig())
    return uri


@pytest.fixture(scope="module")
def one_thread():
    """Use with pytestmark = pytest.mark.usefixtures("one_thread"). Tiny tensors run faster on one intra-op thread,
    and far faster on a busy machine (no spin-waits)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sample_texts() -> list[str]:
    """Every document-like text of the sample corpus: each file whole, its paragraphs, each JSONL record."""
    texts = []
    for path in sorted(SAMPLE.rglob("*")):
        if path.suffix == ".jsonl":
            texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()
                      if line.strip()]
        elif path.suffix in (".txt", ".md"):
            whole = path.read_text(encoding="utf-8")
            texts += [whole] + [p for p in whole.split("\n\n") if p.strip()]
    return texts
