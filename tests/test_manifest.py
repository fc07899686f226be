import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from pipeline.manifest import MANIFEST, input_refs, read_manifest, run_stage


class Cfg(BaseModel):
    k: int = 1


def _work(calls: list, fail: bool = False):
    def work(tmp: Path):
        calls.append(tmp)
        (tmp / "out.txt").write_text("hello")
        if fail:
            raise RuntimeError("boom")
        return {"out": "out.txt"}, {"n": 1}
    return work


def test_manifest_contents_and_skip(tmp_path: Path):
    src = tmp_path / "src.txt"
    src.write_text("data")
    calls: list = []
    out = tmp_path / "run" / "stage"
    m = run_stage("demo", out, input_refs([src]), Cfg(), _work(calls))
    data = json.loads((out / MANIFEST).read_text())
    assert data["stage"] == "demo" and data["outputs"] == {"out": "stage/out.txt"}
    assert data["inputs"][0]["sha256"] and data["config_hash"] and data["code_version"]
    assert m.output("out").read_text() == "hello"
    run_stage("demo", out, input_refs([src]), Cfg(), _work(calls))
    assert len(calls) == 1, "an up-to-date stage must be skipped"
    run_stage("demo", out, input_refs([src]), Cfg(k=2), _work(calls))
    assert len(calls) == 2, "a config change must rerun"
    src.write_text("new data")
    run_stage("demo", out, input_refs([src]), Cfg(k=2), _work(calls))
    assert len(calls) == 3, "an input change must rerun"
    (out / "out.txt").unlink()
    run_stage("demo", out, input_refs([src]), Cfg(k=2), _work(calls))
    assert len(calls) == 4, "missing outputs must rerun"


def test_failed_stage_keeps_previous_output(tmp_path: Path):
    src = tmp_path / "src.txt"
    src.write_text("data")
    out = tmp_path / "run" / "stage"
    run_stage("demo", out, input_refs([src]), Cfg(), _work([]))
    before = (out / MANIFEST).read_text()
    with pytest.raises(RuntimeError):
        run_stage("demo", out, input_refs([src]), Cfg(k=5), _work([], fail=True))
    assert (out / MANIFEST).read_text() == before
    assert read_manifest(out).config == {"k": 1}


def test_read_manifest_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="run the previous stage"):
        read_manifest(tmp_path / "nope" / MANIFEST)
    bad = tmp_path / MANIFEST
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a valid Quill manifest"):
        read_manifest(bad)
