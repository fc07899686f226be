"""Peak memory and wall time of ingest, clean and filter as the corpus grows: driver and workers.

    .venv/bin/python -m benchmarks.scale --docs 100000 300000            # process pool and a local Dask cluster
    .venv/bin/python -m benchmarks.scale --docs 1000000 --modes processes --out benchmarks/results/scale_1m.md
    .venv/bin/python -m benchmarks.scale --docs 100000 --baseline-src /tmp/old   # + the filter of another commit

Writes a synthetic corpus of short web-like documents (about 470 bytes each, seeded, in /tmp, never
in the repository, deleted afterwards) with planted duplicates: 4 % exact copies (other case and
punctuation) and 4 % near copies (a few words changed) of earlier documents, anywhere in the corpus.
Then runs each stage in a fresh child process, so every peak is that run's own:
- ingest (it runs in one process: there is no executor to choose);
- clean and filter with executor=processes (`--workers`, default 2: one per core of this machine);
- clean and filter on a local Dask cluster of `--workers` worker processes (one thread each), started
  and its workers' imports of the pipeline before the clock (the scheduler runs in the driver process,
  so the driver figure includes it; compiled kernels load from numba's cache on each worker's first task).
The filter runs with `offensive.threshold = 1.0`: every document is scored, none dropped as offensive (the
classifier reads the word salad as ~0.6), so a baseline from before the classifier keeps the same documents.
Driver peak = ru_maxrss of the child; workers: a process pool's largest worker (RUSAGE_CHILDREN), or each
Dask worker's own ru_maxrss. "CPU s" adds the driver's and the workers' CPU time, so "docs/s per core"
(docs / CPU s) is steadier than wall time on a busy machine. `--baseline-src` (a folder holding
another commit's tree, e.g. `git archive <commit> | tar -x -C /tmp/old`) times that code's filter on the
same clean output with the same executor, right after this code's.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORDS = ("the a of and to in is was for on that with as it by at from his her an be this which or had not are "
         "but one all were they we their has been have there who will more if no out so said what up its about "
         "into than them can only other new some could time these two may then do first any my now such like our "
         "over man me even most made after also did many before must through back years where much your way well "
         "down should because each just those people how too little state good very make world still own see men "
         "work long get here between both life being under never day same another know while last might us great "
         "old year off come since against go came right used take three garden river morning village market "
         "winter bread window story night harbour lantern bridge teacher letter music kitchen mountain island "
         "summer evening forest library station orchard festival journey travel weather recipe history").split()
DOCS_PER_FILE = 100_000


def document(rng: random.Random) -> str:
    n = rng.randint(5, 9)
    return " ".join(" ".join(rng.choices(WORDS, k=rng.randint(8, 16))).capitalize() + "." for _ in range(n))


def write_corpus(folder: Path, n_docs: int, seed: int = 0) -> int:
    """JSONL files of `n_docs` documents with planted exact and near copies; returns the bytes written."""
    rng = random.Random(seed)
    recent: list[str] = []
    written = 0
    for start in range(0, n_docs, DOCS_PER_FILE):
        lines = []
        for i in range(start, min(n_docs, start + DOCS_PER_FILE)):
            kind = rng.random()
            if recent and kind < 0.04:
                text = rng.choice(recent).upper()
            elif recent and kind < 0.08:
                words = rng.choice(recent).split(" ")
                for _ in range(2):
                    words[rng.randrange(len(words))] = rng.choice(WORDS)
                text = " ".join(words)
            else:
                text = document(rng)
            if len(recent) < 5000:
                recent.append(text)
            else:
                recent[rng.randrange(5000)] = text  # copies of documents from anywhere before
            lines.append(json.dumps({"text": text, "n": i}))
        block = "\n".join(lines) + "\n"
        (folder / f"part{start // DOCS_PER_FILE:04d}.jsonl").write_text(block, encoding="utf-8")
        written += len(block.encode())
    return written


CHILD = """
import json, os, resource, sys, time
sys.path.insert(0, {src!r})
from pathlib import Path
from pipeline.config import CleanConfig, FilterConfig, IngestConfig

stage, mode, workers = {stage!r}, {mode!r}, {workers}
def peak(who):
    return resource.getrusage(who).ru_maxrss / 1024
client = None
if mode == "dask":
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    client.run(__import__, "pipeline.filter")  # the workers import the pipeline before the clock, as forked ones have
    client.run(__import__, "pipeline.clean")
    worker_cpu0 = sum(client.run(time.process_time).values())
executor = "dask" if mode == "dask" else "processes"
t0, start = os.times(), time.perf_counter()
if stage == "ingest":
    from pipeline.ingest import ingest
    m = ingest([{inp!r}], Path({out!r}), IngestConfig())
elif stage == "clean":
    from pipeline.clean import clean
    m = clean(Path({inp!r}), Path({out!r}), CleanConfig(executor=executor, num_workers=workers))
else:
    from pipeline.filter import filter_docs
    # Every document is scored but none dropped as offensive (the classifier reads word salad as ~0.6): so a
    # baseline from before the classifier drops the same documents, and dedup sees the same input.
    section = "offensive" if "offensive" in FilterConfig.model_fields else "toxicity"
    fcfg = FilterConfig(executor=executor, num_workers=workers, **{{section: {{"threshold": 1.0}}}})
    m = filter_docs(Path({inp!r}), Path({out!r}), fcfg)
wall = time.perf_counter() - start
t1 = os.times()
cpu = (t1.user - t0.user) + (t1.system - t0.system) + (t1.children_user - t0.children_user) + \\
      (t1.children_system - t0.children_system)
if client is not None:
    worker_rss = sorted(client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024).values())
    cpu += sum(client.run(time.process_time).values()) - worker_cpu0
else:
    worker_rss = [peak(resource.RUSAGE_CHILDREN)] if stage != "ingest" else []
print(json.dumps({{"wall": wall, "cpu": cpu, "driver_mb": peak(resource.RUSAGE_SELF), "worker_mb": worker_rss,
                  "docs_in": m.stats.get("docs_in"), "docs_kept": m.stats.get("docs_kept"),
                  "dropped": m.stats.get("dropped"), "manifest": str(m.path)}}))
"""


def run_stage(stage: str, mode: str, inp: Path, out: Path, workers: int, src: Path = REPO) -> dict:
    code = CHILD.format(src=str(src), stage=stage, mode=mode, workers=workers, inp=str(inp), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=src)
    if proc.returncode:
        sys.exit(f"{stage} ({mode}, {src}) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def row(n_docs: int, mb: float, stage: str, mode: str, r: dict) -> str:
    workers = " / ".join(f"{w:.0f}" for w in r["worker_mb"]) or "-"
    return (f"| {n_docs:,} | {mb:.0f} | {stage} | {mode} | {r['wall']:.1f} | {r['cpu']:.1f} | "
            f"{r['docs_in'] / r['cpu']:,.0f} | {r['driver_mb']:.0f} | {workers} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, nargs="+", default=[100_000, 300_000])
    ap.add_argument("--modes", nargs="+", default=["processes", "dask"], choices=["processes", "dask"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline-src", type=Path, help="another commit's tree: its filter is timed beside this one's")
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where the corpus and the runs go (deleted after)")
    ap.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = ap.parse_args()
    lines = [f"# python -m benchmarks.scale {' '.join(sys.argv[1:])}  ({time.strftime('%Y-%m-%d %H:%M')}, "
             f"{args.workers} workers; a shared 2-core machine: wall times are noisy, CPU s less so)", "",
             "| docs | MB | stage | executor | wall s | CPU s | docs/s per core | driver peak MB | worker peak MB |",
             "|---:|---:|---|---|---:|---:|---:|---:|---|"]
    print("\n".join(lines), flush=True)
    for n_docs in args.docs:
        root = Path(tempfile.mkdtemp(prefix="quill-scale-", dir=args.tmp))
        try:
            (root / "corpus").mkdir()
            mb = write_corpus(root / "corpus", n_docs) / 2**20
            ing = run_stage("ingest", "local", root / "corpus", root / "ingest", args.workers)
            lines.append(row(n_docs, mb, "ingest", "one process", ing))
            print(lines[-1], flush=True)
            for mode in args.modes:
                cl = run_stage("clean", mode, Path(ing["manifest"]), root / mode / "clean", args.workers)
                lines.append(row(n_docs, mb, "clean", mode, cl))
                print(lines[-1], flush=True)
                fi = run_stage("filter", mode, Path(cl["manifest"]), root / mode / "filter", args.workers)
                lines.append(row(n_docs, mb, "filter", mode, fi))
                print(lines[-1], flush=True)
                if args.baseline_src:
                    old = run_stage("filter", mode, Path(cl["manifest"]), root / "baseline" / mode / "filter",
                                    args.workers, src=args.baseline_src)
                    lines.append(row(n_docs, mb, "filter (baseline)", mode, old))
                    print(lines[-1], flush=True)
                    same = old["docs_kept"] == fi["docs_kept"] and old["dropped"] == fi["dropped"]
                    lines.append(f"|  |  | baseline and this filter agree on kept and dropped counts: {same} |||||||")
                    print(lines[-1], flush=True)
                    if not same:
                        sys.exit(f"baseline {old['dropped']} != {fi['dropped']}")
                shutil.rmtree(root / mode, ignore_errors=True)
            dropped = fi["dropped"]
            lines.append(f"|  |  | filter drops at {n_docs:,} | | {dropped} | | | | |")
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
