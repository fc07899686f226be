import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import STAGES, build_parser, main


@pytest.fixture(scope="module", autouse=True)
def prefect_logging():
    """Prefect binds its log handlers to sys.stderr as it is when first set up. Do that here: inside a test
    with capsys it would be capsys's stream, closed after that test, and later flow runs would fail to log."""
    import prefect.main  # noqa: F401


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "serve", "stage", "generate", "config"):
        assert cmd in out


def test_help_is_fast_and_light():
    code = "import sys; from flows.cli import main; import contextlib, io\n" \
           "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n" \
           "print(sorted(m for m in ('torch', 'prefect', 'mlflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", "quill --help must not import torch, prefect or mlflow"


def test_stage_command_prints_manifest(corpus_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "ingest"
    assert main(["stage", "ingest", "--input", str(corpus_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str((out / "manifest.json").resolve())


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys):
    assert main(["stage", "clean", "--input", str(tmp_path / "nope.json"), "--out", str(tmp_path / "c")]) == 2
    assert "no manifest at" in capsys.readouterr().err
    assert main(["config", "--set", "train.max_steps=abc"]) == 2
    assert "max_steps" in capsys.readouterr().err


def test_generate_rejects_a_non_checkpoint(tmp_path: Path):
    with pytest.raises(SystemExit, match="not a checkpoint folder"):
        main(["generate", "hi", "--model", str(tmp_path)])


def test_serve_and_run_flags_in_help(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--cron", "--timezone", "--paused", "--task-runner", "--dry-run"):
        assert flag in out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    assert "threads,processes,dask,ray" in capsys.readouterr().out


def test_serve_dry_run_lists_the_scheduled_and_stage_deployments(capsys):
    assert main(["serve", "--dry-run", "--cron", "15 4 * * *", "--name", "nightly", "--set", "train.max_steps=50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("corpus_to_model/nightly  schedule=15 4 * * *") and "train.max_steps=50" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == [f"stage-{s}/manual" for s in STAGES]


def test_serve_without_a_server_says_how_to_start_one(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (temporary_settings(restore_defaults={PREFECT_API_URL}),
          pytest.raises(SystemExit, match="prefect server start")):
        main(["serve"])


@pytest.mark.parametrize("extra", ["dask", "ray"])
def test_missing_task_runner_extra_is_a_clear_error(extra, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, f"prefect_{extra}", None)  # import fails as if not installed
    assert main(["run", "--task-runner", extra]) == 2
    assert f"pip install 'quill[{extra}]'" in capsys.readouterr().err


def test_task_runner_choices():
    from prefect.task_runners import ProcessPoolTaskRunner

    from flows.runners import task_runner

    assert task_runner("threads") is None  # the flow's default thread pool
    assert isinstance(task_runner("processes"), ProcessPoolTaskRunner)
    with pytest.raises(ValueError, match="for dask or ray"):
        task_runner("processes", "tcp://x:8786")
    pytest.importorskip("prefect_dask")
    assert type(task_runner("dask")).__name__ == "DaskTaskRunner"


def test_stage_ingest_takes_several_inputs_after_one_flag(tmp_path):
    from flows.cli import main
    from pipeline.manifest import read_manifest

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("The first little story about a fox and a river.\n", encoding="utf-8")
    b.write_text("The second little story about a lighthouse keeper.\n", encoding="utf-8")
    assert main(["stage", "ingest", "--input", str(a), str(b), "--out", str(tmp_path / "one")]) == 0
    assert main(["stage", "ingest", "--input", str(a), "--input", str(b), "--out", str(tmp_path / "two")]) == 0
    assert read_manifest(tmp_path / "one").stats["docs_kept"] == read_manifest(tmp_path / "two").stats["docs_kept"] == 2


def test_mlflow_ui_links_follow_the_tracking_server(monkeypatch):
    from pipeline.tracking import ui_url

    monkeypatch.delenv("QUILL_MLFLOW_UI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example.com:8080/")
    assert ui_url() == "http://mlflow.example.com:8080"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db")
    assert ui_url() == "http://127.0.0.1:5000"  # `make ui`
    monkeypatch.setenv("QUILL_MLFLOW_UI", "http://127.0.0.1:5055/")
    assert ui_url() == "http://127.0.0.1:5055"
