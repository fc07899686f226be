"""Side by side in one process: the clean and filter stages and each text function of another git
revision (the base) against this working tree.

    .venv/bin/python -m benchmarks.compare 3f66ef3                       # gutenberg_creative, c4_sample
    .venv/bin/python -m benchmarks.compare HEAD~2 --corpora dclm_web_noisy --rounds 9 --no-stages

On this shared machine timings drift by 10-40 % between runs minutes apart, so two runs of
`benchmarks.data_stages` cannot show a 10 % change. Here the base revision's `pipeline/` is exported
with `git archive` into a temporary folder as the package `pipeline_base` (its imports rewritten), and
one process alternates base and current round after round (base first in even rounds, current first
in odd ones). Every figure is the least CPU time over the rounds; round 0 of the stages only warms up.
The stages run on 1 core on the corpus copied up to `--min-mb`, with Parquet I/O, reports and manifests;
the text functions on the corpus as it is, in the batches the stages cut. Corpora come from
../shared/corpora/ (skipped with a message when absent).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from benchmarks.data_stages import CORPORA, REPO, SHARED, corpus_batches, replicate, text_functions

BASE = "pipeline_base"
_IMPORT = re.compile(r"\b(from|import)\s+pipeline\b|([\"'])pipeline\.")


def export_base(rev: str, dest: Path) -> str:
    """`pipeline/` of `rev` as the package `BASE` under `dest` (put on sys.path); returns the full commit."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"], capture_output=True,
                            text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "pipeline"], capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    (dest / "pipeline").rename(dest / BASE)
    for path in (dest / BASE).rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        path.write_text(_IMPORT.sub(lambda m: f"{m[1]} {BASE}" if m[1] else f"{m[2]}{BASE}.", text), encoding="utf-8")
    return commit


def local_stages(package: str, sources: list[str], work: Path, cfg):
    """(ingest, clean, filter manifests) of `sources` through the stages of `package` (this tree's `pipeline`
    or an exported base) in this process, with `cfg`, a RunConfig of that package's config module."""
    ingest = importlib.import_module(f"{package}.ingest").ingest
    clean = importlib.import_module(f"{package}.clean").clean
    filter_docs = importlib.import_module(f"{package}.filter").filter_docs
    m_in = ingest(sources, work / "ingest", cfg.ingest)
    m_cl = clean(m_in.path, work / "clean", cfg.clean, executor="local")
    return m_in, m_cl, filter_docs(m_cl.path, work / "filter", cfg.filter, executor="local")


def _alternate(rounds: int, run) -> dict[str, float]:
    """{"base": least seconds, "current": least seconds} of `run(package)` over alternating rounds."""
    best = {"base": float("inf"), "current": float("inf")}
    for r in range(rounds):
        for tag in ("base", "current") if r % 2 == 0 else ("current", "base"):
            start = time.process_time()
            run(BASE if tag == "base" else "pipeline")
            best[tag] = min(best[tag], time.process_time() - start)
    return best


def compare_stages(name: str, folder: Path, rounds: int) -> tuple[float, dict[str, dict[str, float]]]:
    """(MB of text, {stage: least CPU seconds per side}) for clean, filter and both, 1 core."""
    import pyarrow as pa

    from pipeline.config import IngestConfig
    from pipeline.ingest import ingest

    pa.set_cpu_count(1)
    over = CORPORA[name][1]
    root = Path(tempfile.mkdtemp(prefix="quill-compare-"))
    try:
        ing = ingest([str(folder)], root / "ingest", IngestConfig(**over.get("ingest", {})))
        best = {stage: {"base": float("inf"), "current": float("inf")} for stage in ("clean", "filter", "both")}
        for r in range(rounds + 1):
            for tag in ("base", "current") if r % 2 == 0 else ("current", "base"):
                package = BASE if tag == "base" else "pipeline"
                config = importlib.import_module(f"{package}.config")
                clean = importlib.import_module(f"{package}.clean").clean
                filter_docs = importlib.import_module(f"{package}.filter").filter_docs
                fcfg = config.FilterConfig.model_validate({**over.get("filter", {}), "executor": "local",
                                                           "num_workers": 1})
                out = root / f"{tag}{r}"
                t0 = time.process_time()
                cl = clean(ing.path, out / "clean", config.CleanConfig(executor="local", num_workers=1))
                t1 = time.process_time()
                filter_docs(cl.path, out / "filter", fcfg)
                t2 = time.process_time()
                shutil.rmtree(out)
                if r:  # round 0 builds each side's tables
                    for stage, seconds in (("clean", t1 - t0), ("filter", t2 - t1), ("both", t2 - t0)):
                        best[stage][tag] = min(best[stage][tag], seconds)
        return ing.stats["bytes_kept"] / 2**20, best
    finally:
        shutil.rmtree(root, ignore_errors=True)


def compare_functions(name: str, folder: Path, rounds: int) -> tuple[float, dict[str, dict[str, float]]]:
    """(MB of raw text, {function: least CPU seconds per side}) over the corpus's batches."""
    raw, cleaned = corpus_batches(name, folder)
    sides = {package: text_functions(name, package) for package in (BASE, "pipeline")}
    words = {package: [wa.from_texts(b) for b in cleaned] for package, (wa, _) in sides.items()}
    out = {}
    for fname in sides["pipeline"][1]:
        if fname not in sides[BASE][1]:
            continue

        def run(package: str, fname: str = fname) -> None:
            reads_raw, fn = sides[package][1][fname]
            for b, w in zip(raw if reads_raw else cleaned, words[package]):
                fn(b, w)

        run(BASE), run("pipeline")  # tables each function builds once per process
        out[fname] = _alternate(rounds, run)
    return sum(len(t.encode()) for b in raw for t in b) / 2**20, out


def _row(name: str, what: str, mb: float, best: dict[str, float]) -> str:
    b, c = best["base"], best["current"]
    return f"| {name} | {what} | {mb / b:.2f} | {mb / c:.2f} | ×{b / c:.2f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="git revision to compare against (commit, tag, HEAD~3, ...)")
    ap.add_argument("--corpora", nargs="+", default=["gutenberg_creative", "c4_sample"], choices=sorted(CORPORA))
    ap.add_argument("--min-mb", type=float, default=16.0, help="copy each corpus up to this many MB for the stages")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per measurement; the least time counts")
    ap.add_argument("--no-stages", action="store_true", help="compare the text functions only")
    args = ap.parse_args()
    # before numpy loads: one core is one core
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    if not SHARED.is_dir():
        print(f"skipped: no corpora at {SHARED} (see ../shared/corpora/README.md)")
        return
    with tempfile.TemporaryDirectory(prefix="quill-compare-") as tmp:
        commit = export_base(args.base, Path(tmp) / "base")
        sys.path.insert(0, str(Path(tmp) / "base"))
        print(f"# base {args.base} ({commit[:10]}) against the working tree; MB/s on 1 core from the least CPU time "
              f"of {args.rounds} alternating rounds\n")
        print("| corpus | measured | base MB/s | current MB/s | current / base |\n|---|---|---:|---:|---:|")
        for name in args.corpora:
            if not (SHARED / name).is_dir():
                print(f"| {name} | skipped: not in {SHARED} | | | |")
                continue
            once, _ = replicate(name, Path(tmp) / "once", 0)
            if not args.no_stages:
                folder, copies = replicate(name, Path(tmp) / "copies", args.min_mb)
                mb, stages = compare_stages(name, folder, args.rounds)
                for stage, label in (("clean", "clean stage"), ("filter", "filter stage"),
                                     ("both", "**clean + filter + dedup**")):
                    print(_row(f"{name} ×{copies}", label, mb, stages[stage]), flush=True)
            mb, functions = compare_functions(name, once, args.rounds)
            for fname, best in functions.items():
                print(_row(name, fname, mb, best), flush=True)


if __name__ == "__main__":
    main()
