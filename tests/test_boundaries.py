"""The architecture as imports (README "Architecture"): each folder owns one kind of code and imports
only downwards.

    flows/           the `quill` CLI and Prefect: may import everything below
    pipeline/*.py    the stages and their shared seams; never Prefect, MLflow only in the seam modules
    pipeline/eval/   what the evaluate stage measures
    pipeline/io/     sources, document and token shards, the executor: never the text kernels
    pipeline/text/   the text kernels: the standard library, numpy, numba, pyarrow and pipeline.config only
    model/           torch and friends only: never pipeline/ or flows/

Every import counts, also those inside functions (lazy imports hide circles, they do not remove them).
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

from pipeline import STAGES

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "model", "flows")
# pipeline/*.py besides the stages; dedup_steps: the filter's dedup over shards and partitions, which needs both
# io/ (its partition files) and text/ (its kernels), so it can live in neither
SEAMS = {"config", "manifest", "sieve", "reports", "tracking", "pyfunc", "dedup_steps"}
MLFLOW_MODULES = {"pipeline.tracking", "pipeline.register", "pipeline.pyfunc"}
TEXT_ALLOWED = {"numpy", "numba", "pyarrow"}
MODEL_ALLOWED = {"torch", "safetensors", "sentencepiece"}


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages (a package is its __init__)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(node: ast.ImportFrom, module: str, path: Path) -> str:
    if node.level == 0:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


@cache
def imports(module: str) -> tuple[set[str], list[tuple[str, str]]]:
    """(every module it imports, as dotted names; the (module, name) pairs of its `from` imports)."""
    path = modules()[module]
    names: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node, module, path)
            names.add(source)
            for alias in node.names:  # `from pipeline.eval import metrics` imports the module pipeline.eval.metrics
                if f"{source}.{alias.name}" in modules():
                    names.add(f"{source}.{alias.name}")
                else:
                    pairs.append((source, alias.name))
    return names, pairs


def top(name: str) -> str:
    return name.split(".")[0]


def project_imports(module: str) -> set[str]:
    return {n for n in imports(module)[0] if n in modules()}


def in_folder(module: str, folder: str) -> bool:
    return module == folder or module.startswith(folder + ".")


def test_ls_pipeline_lists_the_stages_and_the_seams():
    files = {p.stem for p in (ROOT / "pipeline").glob("*.py")} - {"__init__"}
    assert set(STAGES) <= files, f"a stage without its module: {set(STAGES) - files}"
    assert files - set(STAGES) == SEAMS, "pipeline/*.py: the stages and the shared seams; the rest goes in a folder"
    folders = {p.name for p in (ROOT / "pipeline").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == {"io", "text", "eval"}


def test_model_imports_only_torch_and_friends():
    for module in (m for m in modules() if in_folder(m, "model")):
        outside = {top(n) for n in imports(module)[0]} - MODEL_ALLOWED - set(sys.stdlib_module_names) - {"model"}
        assert not outside, f"{module} imports {outside}"


def test_text_kernels_import_only_numeric_libraries_and_the_config():
    for module in (m for m in modules() if in_folder(m, "pipeline.text")):
        for name in imports(module)[0]:
            if name in modules():
                allowed = in_folder(name, "pipeline.text") or name in ("pipeline", "pipeline.config")
                assert allowed, f"{module} imports {name}"
            else:
                allowed = TEXT_ALLOWED | set(sys.stdlib_module_names)
                assert top(name) in allowed, f"{module} imports {name}"


def test_io_never_imports_the_text_kernels():
    for module in (m for m in modules() if in_folder(m, "pipeline.io")):
        assert not {n for n in project_imports(module) if in_folder(n, "pipeline.text")}, module


def test_pipeline_never_imports_flows_or_prefect_and_mlflow_only_in_the_seam():
    for module in (m for m in modules() if in_folder(m, "pipeline")):
        tops = {top(n) for n in imports(module)[0]}
        assert "flows" not in tops, f"{module} imports flows"
        assert "prefect" not in tops, f"{module} imports prefect"
        if module not in MLFLOW_MODULES:
            assert "mlflow" not in tops, f"{module} imports mlflow"


def test_no_module_imports_another_modules_private_names():
    for module in modules():
        for source, name in imports(module)[1]:
            if source in modules() and source != module:
                assert not (name.startswith("_") and not name.startswith("__")), f"{module} imports {source}.{name}"


def test_no_import_circles():
    graph = {m: project_imports(m) - {m} for m in modules()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for name in sorted(graph[module]):
            visit(name, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_checker_sees_what_it_checks():
    # Guards against a test that passes because it reads nothing: lazy and relative imports are found.
    assert "flows.params" in project_imports("flows.cli")  # imported inside a function
    assert "model.gpt" in project_imports("model.checkpoint")  # `from .gpt import ...`
    assert "pipeline.eval.metrics" in project_imports("pipeline.evaluate")  # `from pipeline.eval import metrics`
    assert len([m for m in modules() if in_folder(m, "pipeline.text")]) >= 10
