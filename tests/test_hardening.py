"""Wrong, stale or concurrent input: every stage refuses it with `quill: error: ...` and exit code 2."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.cli import main
from pipeline.config import CleanConfig, FilterConfig, IngestConfig
from pipeline.manifest import (
    EXPECTS,
    MANIFEST,
    StageInputError,
    code_files,
    lock_path,
    read_manifest,
    run_stage,
    stage_inputs,
)
from tests.conftest import PASS_CLEAN, REPO

pytestmark = pytest.mark.usefixtures("one_thread")


def quill(capsys, *argv: str) -> tuple[int, str]:
    """(exit code, stderr) of `quill argv` in this process."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err


# --- 1. a stage reads only the manifest of the stage before it -------------------------------------

WRONG = [("clean", "tokenize"), ("filter", "ingest"), ("tokenize", "ingest"), ("train", "filter"),
         ("evaluate", "tokenize"), ("register", "train")]


@pytest.mark.parametrize(("stage", "given"), WRONG)
def test_a_stage_refuses_another_stages_manifest(stage, given, tiny_evaluated, tmp_path, capsys):
    run = tiny_evaluated.run_dir
    out = tmp_path / stage
    code, err = quill(capsys, "stage", stage, "--input", str(run / given / MANIFEST), "--out", str(out), "--no-mlflow")
    assert code == 2
    assert f"quill: error: {run / given / MANIFEST}: {stage} reads the {EXPECTS[stage]} stage's manifest" in err
    assert f"this one is from '{given}'" in err and "Traceback" not in err
    assert not out.exists() and not out.with_name(f"{stage}.partial").exists()


def test_every_stage_after_ingest_names_the_stage_it_reads():
    from pipeline import STAGES

    assert [EXPECTS[s] for s in STAGES[1:]] == list(STAGES[:-1])


# --- 2. no documents: a clear stop, never a traceback ------------------------------------------------

def test_clean_keeping_nothing_stops_like_ingest(tmp_path, capsys):
    src = tmp_path / "short.txt"
    src.write_text("two words\n\nmore words\n\nlast ones\n", encoding="utf-8")
    assert quill(capsys, "stage", "ingest", "--input", str(src), "--out", str(tmp_path / "ingest"),
                 "--set", "ingest.split=paragraph")[0] == 0
    code, err = quill(capsys, "stage", "clean", "--input", str(tmp_path / "ingest" / MANIFEST),
                      "--out", str(tmp_path / "clean"))
    assert code == 2
    assert "quill: error: empty corpus: clean kept 0 of 3 documents (dropped: {'too_short': 3})" in err
    assert "Traceback" not in err and not (tmp_path / "clean").exists()


def _empty_stage(run: Path, stage: str):
    """A stage folder whose manifest lists no documents (as an older Quill could write)."""
    return run_stage(stage, run / stage, [], {}, lambda tmp: ({"docs": []}, {"docs_kept": 0}))


@pytest.mark.parametrize("stage", ["clean", "filter", "tokenize"])
def test_zero_documents_in_is_a_clear_error(stage, tmp_path, capsys):
    given = _empty_stage(tmp_path, EXPECTS[stage])
    code, err = quill(capsys, "stage", stage, "--input", str(given.path), "--out", str(tmp_path / "out"))
    assert code == 2
    assert f"quill: error: empty corpus: {stage} got no documents (0 input shards, 0 rows)" in err
    assert "Traceback" not in err


# --- 3. outputs are verified against the sha256 the stage recorded -----------------------------------

@pytest.fixture
def cleaned(corpus_dir, tmp_path):
    from pipeline.clean import clean
    from pipeline.ingest import ingest

    ing = ingest([str(corpus_dir)], tmp_path / "run" / "ingest", IngestConfig())
    return clean(ing.path, tmp_path / "run" / "clean", CleanConfig(**PASS_CLEAN))


def test_a_consumer_refuses_a_changed_file_and_its_stage_redoes_it(cleaned, capsys, caplog):
    from pipeline.clean import clean

    assert cleaned.output_sha256 and all(len(v) == 64 for v in cleaned.output_sha256.values())
    shard = cleaned.output_list("docs")[0]
    table = pq.read_table(shard)
    assert table.num_rows > 5
    pq.write_table(table.slice(0, 5), shard)  # a 5-row copy; the manifest still says otherwise
    code, err = quill(capsys, "stage", "filter", "--input", str(cleaned.path), "--out", str(cleaned.run_dir / "filter"))
    assert code == 2
    assert f"files of the clean stage changed since it wrote them: clean/{shard.name} (sha256 differs)" in err
    with caplog.at_level(logging.INFO, logger="pipeline.manifest"):
        again = clean(cleaned.inputs[0].path, cleaned.stage_dir, CleanConfig(**PASS_CLEAN))
    assert "skipped" not in again.stats and "its output changed: clean/" in caplog.text
    assert pq.read_table(shard).num_rows == table.num_rows
    stage_inputs(again.path, "filter")  # accepted again


def test_a_stage_output_is_hashed_once_per_process_and_a_changed_one_again(cleaned, monkeypatch):
    """A no-op rerun checks each output as the stage's output and again as the next stage's input: the file
    is read once (when written, here), while a change in place, even of the same size, is seen."""
    from pipeline import manifest
    from pipeline.clean import clean

    hashed: list[str] = []
    plain = manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda path, *a: hashed.append(Path(path).name) or plain(path, *a))
    again = clean(cleaned.inputs[0].path, cleaned.stage_dir, CleanConfig(**PASS_CLEAN))
    assert again.stats.get("skipped")
    stage_inputs(again.path, "filter")
    assert [name for name in hashed if name != "manifest.json"] == [], hashed
    shard = cleaned.output_list("docs")[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, new bytes (and a new mtime)
    shard.write_bytes(bytes(data))
    with pytest.raises(StageInputError, match=rf"clean/{shard.name} \(sha256 differs\)"):
        stage_inputs(cleaned.path, "filter")


def test_a_missing_output_file_is_refused_too(cleaned):
    shard = cleaned.output_list("docs")[0]
    shard.unlink()
    with pytest.raises(StageInputError, match=rf"clean/{shard.name} \(missing\)"):
        stage_inputs(cleaned.path, "filter")


# --- 4. the code a stage runs is part of its cache key ---------------------------------------------

def test_code_files_follow_the_stage_imports():
    rel = {stage: {p.relative_to(REPO).as_posix() for p in code_files(stage)} for stage in ("filter", "train")}
    assert {"pipeline/filter.py", "pipeline/text/dedup.py", "pipeline/text/offensive/score.py",
            "pipeline/manifest.py", "pipeline/text/lexicons/offensive.txt"} <= rel["filter"]
    assert {"pipeline/train.py", "model/gpt.py", "pipeline/eval/bpb.py"} <= rel["train"]
    assert "pipeline/text/dedup.py" not in rel["train"] and "model/gpt.py" not in rel["filter"]


def test_a_code_change_reruns_the_stage_and_says_why(tmp_path, monkeypatch, caplog):
    import pipeline.manifest as manifest

    calls = []

    def work(tmp: Path):
        calls.append(1)
        (tmp / "a.txt").write_text("a")
        return {"a": "a.txt"}, {}

    run_stage("clean", tmp_path / "clean", [], {}, work)
    assert run_stage("clean", tmp_path / "clean", [], {}, work).stats["skipped"]
    monkeypatch.setattr(manifest, "code_hash", lambda stage: "0123456789abcdef")
    with caplog.at_level(logging.INFO, logger="pipeline.manifest"):
        m = run_stage("clean", tmp_path / "clean", [], {}, work)
    assert len(calls) == 2 and m.code_hash == "0123456789abcdef"
    assert "clean: running: its code changed (" in caplog.text and "-> 0123456789abcdef)" in caplog.text


# --- 5. one writer per output folder -----------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from pipeline.manifest import output_lock
with output_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(cleaned, tmp_path, capsys):
    out = tmp_path / "run" / "filter"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = quill(capsys, "stage", "filter", "--input", str(cleaned.path), "--out", str(out),
                          "--set", "filter.executor=local")
        assert code == 2 and f"quill: error: {out} is in use by pid {holder.pid}" in err
        assert not out.exists() and not out.with_name("filter.partial").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).read_text().strip() == str(holder.pid)  # left behind by the killed holder
    code, _ = quill(capsys, "stage", "filter", "--input", str(cleaned.path), "--out", str(out),
                    "--set", "filter.executor=local")
    assert code == 0 and read_manifest(out).stage == "filter"


def test_two_concurrent_filters_on_one_folder_never_mix(cleaned, tmp_path):
    out = tmp_path / "run" / "filter"
    cmd = [sys.executable, "-m", "flows.cli", "stage", "filter", "--input", str(cleaned.path), "--out", str(out),
           "--force", "--set", "filter.executor=local"]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] in (0, 2), results  # 0, 0 when the first finished before the second began
    assert all("in use by pid" in err for code, err in results if code == 2)
    assert not any(p.name.startswith(".pass") for p in out.rglob("*"))
    stage_inputs(out / MANIFEST, "tokenize")  # complete and as recorded


# --- 7. tracebacks become one line --------------------------------------------------------------------

def test_an_unreachable_url_is_one_line(tmp_path, capsys):
    code, err = quill(capsys, "stage", "ingest", "--input", "http://127.0.0.1:9/corpus.txt",
                      "--out", str(tmp_path / "i"), "--set", f"ingest.cache_dir={tmp_path / 'cache'}")
    assert code == 2 and "quill: error: http://127.0.0.1:9/corpus.txt: cannot download" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("override", "message"), [
    ("train.device=tpu", "train.device"),
    ("model.n_head=3", "model.n_embd (64) must be divisible by model.n_head (3)"),
])
def test_bad_settings_are_refused_at_config_time(override, message, capsys):
    code, err = quill(capsys, "config", "--preset", "tiny", "--set", override)
    assert code == 2 and "quill: error:" in err and message in err and "Traceback" not in err


def test_a_truncated_checkpoint_is_one_line_and_a_traceback_with_v(tiny_evaluated, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(read_manifest(tiny_evaluated.inputs[0].path).output("checkpoint"), ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, err = quill(capsys, "generate", "Once", "--model", str(ckpt))
    assert code == 2 and f"quill: error: {weights}: cannot read the weights" in err and "Traceback" not in err
    code, err = quill(capsys, "-v", "generate", "Once", "--model", str(ckpt))
    assert code == 2 and "Traceback" in err


@pytest.mark.parametrize("command", [["generate", "Once"], ["serve-model"]])
def test_an_unknown_registered_model_is_one_line(command, mlflow_registry, capsys):
    code, err = quill(capsys, *command, "--model", "models:/no-such-model@champion")
    assert code == 2 and "quill: error: models:/no-such-model@champion: no such model in the MLflow registry" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["--n", "0"], ["--n", "-1"], ["--temperature", "nan"], ["--top-p", "inf"]])
def test_generate_refuses_values_that_would_print_nothing_or_ignore_the_setting(argv, tiny_evaluated, capsys):
    ckpt = read_manifest(tiny_evaluated.inputs[0].path).output("checkpoint")
    t0 = time.perf_counter()
    code, err = quill(capsys, "generate", "Once", "--model", str(ckpt), *argv)
    assert code == 2 and f"argument {argv[0]}" in err
    assert time.perf_counter() - t0 < 30  # refused by the parser, before the model loads


def test_filter_still_runs_on_the_sample(cleaned, tmp_path):
    from pipeline.filter import filter_docs

    m = filter_docs(cleaned.path, tmp_path / "run" / "filter", FilterConfig(executor="local"))
    assert m.stats["docs_kept"] > 0 and m.code_hash


# --- 8. a train that fails or is interrupted ends its MLflow run --------------------------------------

@pytest.mark.parametrize(("raised", "status"), [(FloatingPointError("train: loss is nan"), "FAILED"),
                                                 (KeyboardInterrupt(), "KILLED")])
def test_quill_stage_train_ends_its_run_when_training_stops(raised, status, mlflow_registry, tmp_path, monkeypatch,
                                                            capsys):
    from mlflow import MlflowClient

    import pipeline.train
    from pipeline.tracking import experiment_id

    def stops(*a, **k):
        raise raised

    monkeypatch.setattr(pipeline.train, "train", stops)
    argv = ["stage", "train", "--input", str(tmp_path / "tokenize" / MANIFEST), "--out", str(tmp_path / "train")]
    if isinstance(raised, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            main(argv)
    else:
        assert quill(capsys, *argv)[0] == 2
    [run] = MlflowClient().search_runs([experiment_id("quill-local")])  # where local stage runs log
    assert run.info.status == status
