"""The architecture as imports: model/ knows only torch, pipeline/ never imports Prefect, and only
the tracking seam imports MLflow at module level."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MLFLOW_MODULES = {"tracking.py", "register.py", "pyfunc.py"}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_model_imports_only_torch_and_friends():
    allowed = {"torch", "safetensors", "sentencepiece", "model", "__future__", "math", "dataclasses", "json",
               "os", "io", "shutil", "pathlib", "typing", "collections", "logging", "tempfile", "itertools", "inspect",
               "contextlib", "functools", "time", "heapq", "warnings", "uuid"}
    for path in (ROOT / "model").glob("*.py"):
        extra = imports(path) - allowed
        assert not extra, f"{path.name} imports {extra}"


def test_pipeline_never_imports_prefect_and_mlflow_only_in_the_seam():
    for path in (ROOT / "pipeline").glob("*.py"):
        names = imports(path)
        assert "prefect" not in names, f"{path.name} imports prefect"
        if path.name not in MLFLOW_MODULES:
            assert "mlflow" not in names, f"{path.name} imports mlflow"
    assert "flows" not in imports(ROOT / "pipeline" / "config.py")
