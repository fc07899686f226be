"""Throughput of the data stages (ingest, clean, filter with dedup) on the real corpora.

    .venv/bin/python -m benchmarks.data_stages                          # gutenberg_creative, c4_sample, dclm_web_noisy
    .venv/bin/python -m benchmarks.data_stages --corpora c4_sample --min-mb 8 --repeat 3

The corpora live in ../shared/corpora/ (skipped with a message when absent). Each corpus is copied
into a temporary folder as many times as needed to reach `--min-mb` of input (distinct file names,
so ids stay unique; the copies are exact duplicates, which pass 1 of the filter screens in full and
dedup then drops), then, for each mode, in a fresh process (so peak RSS is that run's own):
- 1 core: clean and filter with executor=local;
- all cores: executor=processes with one worker per core (the docs are cut into 4 shards per core).
Every process runs one BLAS/OpenMP thread (and, in 1-core mode, one Arrow thread), so a core is a core.
Each stage is timed end to end (reading, work, Parquet writing, report, manifest). MB/s counts the
stage's input text (UTF-8), and "CPU MB/s" divides by CPU seconds of the process and its workers:
steadier than wall time on a busy machine. Timings are the best of `--repeat` rounds. A second
table gives the drop counts per reason of one pass over the corpus as it is (no copies).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# benchmarks/tokenize.py must never shadow the standard library's tokenize: drop this folder from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "corpora"
CORPORA = {  # sources (globs under the corpus folder), then config overrides per stage
    "gutenberg_creative": (["*.txt"], {"filter": {"quality": {"profile": "prose"}}}),
    "c4_sample": (["*.gz"], {"filter": {"quality": {"profile": "web"}}}),
    "dclm_web_noisy": (["majority_data.jsonl"], {"filter": {"quality": {"profile": "web"}}}),
    "tinystories_sample": (["tinystories_train_head1000.txt"], {"ingest": {"split": "line"}}),
    "chinese_poetry": (["quantangshi_*.json", "tangshi_300.json"], {"ingest": {"text_field": "paragraphs"},
                                                                    "filter": {"quality": {"profile": "poetry"}}}),
}
DEFAULT = ["gutenberg_creative", "c4_sample", "dclm_web_noisy"]


def cpu_seconds() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def peak_rss_mb() -> tuple[float, float]:
    """(this process, its largest reaped child) peak resident set size in MB (Linux reports KB)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def replicate(name: str, dest: Path, min_mb: float) -> tuple[Path, int]:
    """Copies of the corpus files in `dest/<name>` until they hold `min_mb`; returns (folder, copies)."""
    files = sorted({p for pattern in CORPORA[name][0] for p in (SHARED / name).glob(pattern)})
    size = sum(p.stat().st_size for p in files)
    copies = max(1, int(-(-min_mb * 2**20 // size))) if min_mb > 0 else 1
    folder = dest / name
    folder.mkdir(parents=True)
    for k in range(copies):
        for p in files:
            shutil.copyfile(p, folder / (f"{k:03d}_{p.name}" if copies > 1 else p.name))
    return folder, copies


def text_bytes(m) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    return sum(pc.sum(pc.binary_length(pq.read_table(p, columns=["text"]).column("text"))).as_py() or 0
               for p in m.output_list("docs"))


def timed(fn) -> dict:
    wall, cpu = time.perf_counter(), cpu_seconds()
    manifest = fn()
    return {"wall": time.perf_counter() - wall, "cpu": cpu_seconds() - cpu, "manifest": manifest}


def run_one(name: str, folder: Path, mode: str, repeat: int) -> dict:
    """Ingest, clean and filter `folder` in this process, `repeat` times; the best round of each stage."""
    from pipeline.clean import clean
    from pipeline.config import CleanConfig, FilterConfig, IngestConfig
    from pipeline.filter import filter_docs
    from pipeline.ingest import ingest
    from pipeline.shards import cpus

    over = CORPORA[name][1]
    workers = 1 if mode == "1 core" else cpus()
    executor = "local" if mode == "1 core" else "processes"
    best: dict[str, dict] = {}
    root = Path(tempfile.mkdtemp(prefix="quill-bench-"))
    try:
        src_bytes = sum(p.stat().st_size for p in folder.iterdir())
        probe = ingest([str(folder)], root / "probe" / "ingest", IngestConfig(**over.get("ingest", {})))
        # 4 docs shards per core in both modes, so the two modes read the same layout
        shard_docs = max(20, probe.stats["docs_kept"] // (4 * cpus()) + 1)
        icfg = IngestConfig(**{**over.get("ingest", {}), "shard_docs": shard_docs})
        ccfg = CleanConfig(executor=executor, num_workers=workers)
        fcfg = FilterConfig.model_validate({**over.get("filter", {}), "executor": executor, "num_workers": workers})
        for r in range(repeat):
            run = root / f"r{r}"
            rounds = {"ingest": timed(lambda: ingest([str(folder)], run / "ingest", icfg))}
            ing = rounds["ingest"]["manifest"]
            rounds["clean"] = timed(lambda: clean(ing.path, run / "clean", ccfg))
            cl = rounds["clean"]["manifest"]
            rounds["filter"] = timed(lambda: filter_docs(cl.path, run / "filter", fcfg))
            sizes = {"ingest": (src_bytes, ing.stats["docs_in"]), "clean": (ing.stats["bytes_kept"], ing.stats["docs_kept"]),
                     "filter": (cl.stats["bytes_kept"], cl.stats["docs_kept"])}
            for stage, t in rounds.items():
                m = t.pop("manifest")
                if stage not in best or t["wall"] < best[stage]["wall"]:
                    best[stage] = {**t, "bytes": sizes[stage][0], "docs": sizes[stage][1], "dropped": m.stats["dropped"],
                                   "shards": len(m.output_list("docs"))}
            shutil.rmtree(run, ignore_errors=True)
        rss, worker_rss = peak_rss_mb()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"corpus": name, "mode": mode, "workers": workers, "stages": best, "rss_mb": rss, "worker_rss_mb": worker_rss}


def function_rates(name: str, folder: Path) -> dict[str, float]:
    """MB/s of each text function the stages call, over the corpus's documents in batches as the stages
    cut them (1 core). Each function sees the texts its stage gives it: raw for clean, cleaned for filter."""
    from pipeline.audit import Audit
    from pipeline.config import CleanConfig, FilterConfig, IngestConfig
    from pipeline.dedup import MinHasher, exact_keys
    from pipeline.docs import BATCH_ROWS, iter_docs
    from pipeline.ingest import ingest
    from pipeline.pii import pii_candidates, redact_pii
    from pipeline.quality import quality_reasons
    from pipeline.langid import detect_languages
    from pipeline.cleanscan import clean_texts
    from pipeline.toxicity import offensive_score
    from pipeline.toxicity_scan import offensive_candidates
    from pipeline.wordarrays import WordArrays, char_classes

    import numpy as np

    over, root = CORPORA[name][1], Path(tempfile.mkdtemp(prefix="quill-bench-"))
    try:
        m = ingest([str(folder)], root / "ingest", IngestConfig(**over.get("ingest", {})))
        raw = [d["text"] for d in iter_docs(m.output_list("docs"))]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ccfg, fcfg, hasher = CleanConfig(), FilterConfig.model_validate(over.get("filter", {})), MinHasher()
    char_classes()  # built once per process, not per batch
    batch = lambda texts: [texts[i : i + BATCH_ROWS] for i in range(0, len(texts), BATCH_ROWS)]  # noqa: E731
    raw_batches = batch(raw)
    batches = [clean_texts(b, ccfg) for b in raw_batches]
    words = [WordArrays.from_texts(b) for b in batches]

    def pii(texts: list[str]) -> None:
        for i in pii_candidates(texts):
            redact_pii(texts[i])

    def offensive(texts: list[str], w: WordArrays) -> None:
        for i in np.flatnonzero(offensive_candidates(w)).tolist():
            offensive_score(texts[i])

    calls = {"clean_texts": lambda b, w: clean_texts(b, ccfg), "detect_languages": lambda b, w: detect_languages(b),
             "WordArrays": lambda b, w: WordArrays.from_texts(b), "pii": lambda b, w: pii(b),
             "quality_reasons": lambda b, w: quality_reasons(b, w, fcfg.quality), "offensive": offensive,
             "exact_keys": lambda b, w: exact_keys(w), "MinHash": lambda b, w: hasher.signatures(w),
             "Audit.add_batch": lambda b, w: Audit().add_batch(w)}
    if importlib.util.find_spec("profanity_check"):  # the opt-in classifier (filter.toxicity.classifier), if installed
        from pipeline.toxicity_classifier import classifier_votes

        calls["classifier (opt-in)"] = lambda b, w: classifier_votes(b, 0.99)
    mb = sum(len(t.encode()) for t in raw) / 2**20
    rates = {}
    for fname, fn in calls.items():
        inputs = raw_batches if fname in ("clean_texts", "detect_languages") else batches
        fn(inputs[0][:8], WordArrays.from_texts(inputs[0][:8]))  # tables each function builds once per process
        start = time.perf_counter()
        for b, w in zip(inputs, words):
            fn(b, w)
        rates[fname] = mb / (time.perf_counter() - start)
    return rates


def _row(label: str, mode: str, workers: int, stage: str, b: dict, rss: str) -> str:
    mb = b["bytes"] / 2**20
    return (f"| {label} | {stage} | {mode} | {mb:.2f} | {b['docs']:,} | {b['wall']:.2f} | {mb / b['wall']:.2f} | "
            f"{b['docs'] / b['wall']:,.0f} | {mb / b['cpu']:.2f} | {mb / b['wall'] / workers:.2f} | {rss} |")


def print_tables(results: list[dict]) -> None:
    print("\n| corpus | stage | cores | MB in | docs in | s | MB/s | docs/s | CPU MB/s | MB/s per core | peak RSS MB |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        rss = f"{r['rss_mb']:.0f}" + (f" (+{r['worker_rss_mb']:.0f}/worker)" if r["workers"] > 1 else "")
        for stage, b in r["stages"].items():
            print(_row(r["label"], r["mode"], r["workers"], stage, b, rss))
        c, f = r["stages"]["clean"], r["stages"]["filter"]
        mb = c["bytes"] / 2**20
        print(f"| {r['label']} | **clean+filter+dedup** | {r['mode']} | {mb:.2f} | {c['docs']:,} | {c['wall'] + f['wall']:.2f} | "
              f"{mb / (c['wall'] + f['wall']):.2f} | | {mb / (c['cpu'] + f['cpu']):.2f} | "
              f"**{mb / (c['wall'] + f['wall']) / r['workers']:.2f}** | |")
    print("\nDrops per reason (one pass over each corpus as it is):\n")
    print("| corpus | ingest | clean | filter |\n|---|---|---|---|")
    for r in results:
        if r.get("drops"):
            cells = [", ".join(f"{k} {v}" for k, v in r["drops"][s].items()) or "–" for s in ("ingest", "clean", "filter")]
            print(f"| {r['corpus']} | " + " | ".join(cells) + " |")


def child(args: list[str]) -> dict:
    """Run one measurement in a fresh interpreter (its own peak RSS); returns its JSON."""
    # One BLAS/OpenMP thread per process: "1 core" means one core, "all cores" one worker per core.
    env = {**os.environ, **{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False,
                         env=env)
    if out.returncode:
        raise RuntimeError(f"benchmark child failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=DEFAULT, choices=sorted(CORPORA))
    ap.add_argument("--min-mb", type=float, default=8.0, help="replicate each corpus up to this many MB of input")
    ap.add_argument("--repeat", type=int, default=2, help="rounds per measurement; the best counts")
    ap.add_argument("--modes", nargs="+", default=["1 core", "all cores"], choices=["1 core", "all cores"])
    ap.add_argument("--child", nargs=4, metavar=("CORPUS", "FOLDER", "MODE", "REPEAT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")
    if args.child:
        name, folder, mode, repeat = args.child
        if mode == "1 core":
            import pyarrow as pa

            pa.set_cpu_count(1)  # Parquet encoding threads too
        result = function_rates(name, Path(folder)) if mode == "functions" else run_one(name, Path(folder), mode, int(repeat))
        print(json.dumps(result))
        return
    if not SHARED.is_dir():
        print(f"skipped: no corpora at {SHARED} (see ../shared/corpora/README.md)")
        return
    results, rates = [], {}
    with tempfile.TemporaryDirectory(prefix="quill-bench-src-") as tmp:
        for name in args.corpora:
            if not (SHARED / name).is_dir():
                print(f"skipped {name}: not in {SHARED}")
                continue
            once, _ = replicate(name, Path(tmp) / "once", 0)
            folder, copies = replicate(name, Path(tmp) / "copies", args.min_mb)
            drops = child([name, str(once), "1 core", "1"])["stages"]
            rates[name] = child([name, str(once), "functions", "1"])
            for mode in args.modes:
                r = child([name, str(folder), mode, str(args.repeat)])
                r["label"] = f"{name} ×{copies}" if copies > 1 else name
                r["drops"] = {s: b["dropped"] for s, b in drops.items()} if mode == args.modes[0] else None
                results.append(r)
                print(f"{r['label']} {mode}: " + ", ".join(f"{s} {b['wall']:.2f} s" for s, b in r["stages"].items()), flush=True)
    print_tables(results)
    print("\nText functions alone, MB/s on one core (batches of 1024 documents; WordArrays is the filter's one tokenization,\n"
          "shared by quality, offensive, dedup and audit, whose figures exclude it):\n")
    names = list(next(iter(rates.values()), {}))
    print("| corpus | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for corpus, r in rates.items():
        print(f"| {corpus} | " + " | ".join(f"{r[n]:.1f}" for n in names) + " |")


if __name__ == "__main__":
    main()
