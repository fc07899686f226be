"""benchmarks.compare: another revision's `pipeline` runs beside this one's, each importing only itself."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.compare import BASE, export_base
from benchmarks.data_stages import text_functions
from tests.conftest import REPO, sample_texts

pytestmark = pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs a git checkout (git archive of HEAD)")


@contextmanager
def base_on_path(rev: str, tmp_path: Path):
    commit = export_base(rev, tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path, commit
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == BASE or n.startswith(f"{BASE}.")]:
            del sys.modules[name]


# The last commit before pipeline/ was split into stages, io/, text/ and eval/: compare must still read it.
FLAT_LAYOUT_COMMIT = "7abb427"


def _has_commit(rev: str) -> bool:
    return subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{rev}^{{commit}}"],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("rev", ["HEAD", FLAT_LAYOUT_COMMIT])
def test_the_base_revision_imports_only_its_own_modules(rev, tmp_path: Path):
    if not _has_commit(rev):
        pytest.skip(f"{rev} is not in this clone (shallow?)")
    with base_on_path(rev, tmp_path) as (root, commit):
        assert re.fullmatch(r"[0-9a-f]{40}", commit)
        for path in (root / BASE).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"^\s*(from|import)\s+pipeline\b", text, re.M), path
        # both sides run every text function the benchmark times, on the same batch
        texts = sample_texts()[:40]
        for package in (BASE, "pipeline"):
            words_of, functions = text_functions("gutenberg_creative", package)
            assert words_of.__module__.startswith(f"{package}.") and words_of.__module__.endswith(".wordarrays")
            words = words_of.from_texts(texts)
            for _, fn in functions.values():
                fn(list(texts), words)
        importlib.import_module(f"{BASE}.filter")
        importlib.import_module(f"{BASE}.clean")
        loaded = {n: m for n, m in sys.modules.items() if n.startswith(f"{BASE}.")}
        assert {f"{BASE}.{m}" for m in ("filter", "clean")} <= loaded.keys()
        assert all(Path(m.__file__).is_relative_to(root) for m in loaded.values())
        langid = next(m for n, m in loaded.items() if n.endswith(".langid"))
        assert langid.detect_languages(texts) == importlib.import_module("pipeline.text.langid").detect_languages(texts)


def test_an_unknown_revision_is_refused(tmp_path: Path):
    with pytest.raises(subprocess.CalledProcessError) as info:
        export_base("no-such-revision", tmp_path)
    assert info.value.cmd[-2:] == ["--verify", "no-such-revision^{commit}"] and not any(tmp_path.iterdir())
