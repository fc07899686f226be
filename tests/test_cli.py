import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import build_parser, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "stage", "generate", "config"):
        assert cmd in out


def test_help_is_fast_and_light():
    code = "import sys; from pipeline.cli import main; import contextlib, io\n" \
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
