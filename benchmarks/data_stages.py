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
from collections.abc import Callable
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
    "tinystories_sample": (["tinystories_train_head1000.txt"], {}),  # split=auto: one document per story
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
    from pipeline.io.executor import cpus

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
            rounds = {"ingest": timed(lambda run=run: ingest([str(folder)], run / "ingest", icfg))}
            ing = rounds["ingest"]["manifest"]
            rounds["clean"] = timed(lambda ing=ing, run=run: clean(ing.path, run / "clean", ccfg))
            cl = rounds["clean"]["manifest"]
            rounds["filter"] = timed(lambda cl=cl, run=run: filter_docs(cl.path, run / "filter", fcfg))
            sizes = {"ingest": (src_bytes, ing.stats["docs_in"]),
                     "clean": (ing.stats["bytes_kept"], ing.stats["docs_kept"]),
                     "filter": (cl.stats["bytes_kept"], cl.stats["docs_kept"])}
            for stage, t in rounds.items():
                m = t.pop("manifest")
                if stage not in best or t["wall"] < best[stage]["wall"]:
                    best[stage] = {**t, "bytes": sizes[stage][0], "docs": sizes[stage][1],
                                   "dropped": m.stats["dropped"], "shards": len(m.output_list("docs"))}
            shutil.rmtree(run, ignore_errors=True)
        rss, worker_rss = peak_rss_mb()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"corpus": name, "mode": mode, "workers": workers, "stages": best, "rss_mb": rss,
            "worker_rss_mb": worker_rss}


# Where the text modules lived in the flat layout (before pipeline/text/), for `benchmarks.compare` across the move.
FLAT_LAYOUT = {"text.dedup": "dedup", "text.pii": "pii", "text.offensive.prescreen": "toxicity_scan",
               "text.offensive.score": "toxicity", "text.wordarrays": "wordarrays", "text.normalize_batch": "cleanscan",
               "text.langid": "langid", "text.quality": "quality", "text.audit": "audit",
               "text.offensive.classifier": "toxicity_classifier"}


def text_functions(corpus: str, package: str = "pipeline") -> tuple[type, dict[str, tuple[bool, Callable]]]:
    """(the package's WordArrays, {name: (reads raw texts, fn(texts, words))}) for each text function the
    stages call on `corpus` (its filter config: the quality profile), imported from `package`
    (`benchmarks.compare` passes another revision's copy). Functions that read raw texts are the clean
    stage's; the others get cleaned texts and their WordArrays."""
    import numpy as np

    def load(module: str):
        """The module in this layout, or where it lived before the layout change (a base revision's)."""
        try:
            return importlib.import_module(f"{package}.{module}")
        except ModuleNotFoundError:
            return importlib.import_module(f"{package}.{FLAT_LAYOUT[module]}")

    config, dedup, pii, scan, score = (load(m) for m in ("config", "text.dedup", "text.pii", "text.offensive.prescreen",
                                                           "text.offensive.score"))
    ccfg, hasher = config.CleanConfig(), dedup.MinHasher()
    fcfg = config.FilterConfig.model_validate(CORPORA[corpus][1].get("filter", {}))

    def redact(texts: list[str], _) -> None:
        for i in pii.pii_candidates(texts):
            pii.redact_pii(texts[i])

    def offensive(texts: list[str], words) -> None:
        getattr(score, "forget", lambda: None)()  # as the filter does per batch: a repeat is no cache hit
        for i in np.flatnonzero(scan.offensive_candidates(words)).tolist():
            score.offensive_score(texts[i])

    word_arrays = load("text.wordarrays").WordArrays
    calls = {"clean_texts": (True, lambda b, w: load("text.normalize_batch").clean_texts(b, ccfg)),
             "detect_languages": (True, lambda b, w: load("text.langid").detect_languages(b)),
             "WordArrays": (False, lambda b, w: word_arrays.from_texts(b)), "pii": (False, redact),
             "quality_reasons": (False, lambda b, w: load("text.quality").quality_reasons(b, w, fcfg.quality)),
             "offensive": (False, offensive), "exact_keys": (False, lambda b, w: dedup.exact_keys(w)),
             "MinHash": (False, lambda b, w: hasher.signatures(w)),
             "Audit.add_batch": (False, lambda b, w: load("text.audit").Audit().add_batch(w))}
    try:  # the trained classifier, on by default (a revision before it has none)
        has_model = importlib.util.find_spec(f"{package}.text.offensive.model") is not None
    except ModuleNotFoundError:
        has_model = False
    if has_model:
        votes, threshold = load("text.offensive.classifier").classifier_votes, fcfg.offensive.classifier_threshold
        calls["offensive classifier"] = (False, lambda b, w: votes(w, b, threshold(fcfg.quality.profile),
                                                                   [t.count("\n") >= 7 for t in b]))
    return word_arrays, calls


def corpus_batches(name: str, folder: Path) -> tuple[list[list[str]], list[list[str]]]:
    """The corpus's documents in batches as the stages cut them: (raw, cleaned) texts."""
    from pipeline.config import CleanConfig, IngestConfig
    from pipeline.ingest import ingest
    from pipeline.io.docshards import BATCH_ROWS, iter_docs
    from pipeline.text.normalize_batch import clean_texts

    root = Path(tempfile.mkdtemp(prefix="quill-bench-"))
    try:
        m = ingest([str(folder)], root / "ingest", IngestConfig(**CORPORA[name][1].get("ingest", {})))
        raw = [d["text"] for d in iter_docs(m.output_list("docs"))]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    raw_batches = [raw[i : i + BATCH_ROWS] for i in range(0, len(raw), BATCH_ROWS)]
    return raw_batches, [clean_texts(b, CleanConfig()) for b in raw_batches]


def function_rates(name: str, folder: Path, rounds: int = 3) -> dict[str, float]:
    """MB/s of each text function the stages call (best of `rounds`), over the corpus's documents in
    batches as the stages cut them (1 core): raw texts for clean's functions, cleaned ones for the filter's."""
    raw, cleaned = corpus_batches(name, folder)
    word_arrays, calls = text_functions(name)
    words = [word_arrays.from_texts(b) for b in cleaned]
    mb = sum(len(t.encode()) for b in raw for t in b) / 2**20
    best = {fname: float("inf") for fname in calls}
    for fname, (reads_raw, fn) in calls.items():
        batches = raw if reads_raw else cleaned
        fn(batches[0], words[0])  # tables each function builds once per process
        for _ in range(rounds):
            start = time.process_time()
            for b, w in zip(batches, words):
                fn(b, w)
            best[fname] = min(best[fname], time.process_time() - start)
    return {fname: mb / t for fname, t in best.items()}


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
        print(f"| {r['label']} | **clean+filter+dedup** | {r['mode']} | {mb:.2f} | {c['docs']:,} | "
              f"{c['wall'] + f['wall']:.2f} | "
              f"{mb / (c['wall'] + f['wall']):.2f} | | {mb / (c['cpu'] + f['cpu']):.2f} | "
              f"**{mb / (c['wall'] + f['wall']) / r['workers']:.2f}** | |")
    print("\nDrops per reason (one pass over each corpus as it is):\n")
    print("| corpus | ingest | clean | filter |\n|---|---|---|---|")
    for r in results:
        if r.get("drops"):
            cells = [", ".join(f"{k} {v}" for k, v in r["drops"][s].items()) or "–"
                     for s in ("ingest", "clean", "filter")]
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
        result = (function_rates(name, Path(folder), int(repeat)) if mode == "functions"
                  else run_one(name, Path(folder), mode, int(repeat)))
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
            rates[name] = child([name, str(once), "functions", str(max(3, args.repeat))])
            for mode in args.modes:
                r = child([name, str(folder), mode, str(args.repeat)])
                r["label"] = f"{name} ×{copies}" if copies > 1 else name
                r["drops"] = {s: b["dropped"] for s, b in drops.items()} if mode == args.modes[0] else None
                results.append(r)
                print(f"{r['label']} {mode}: " + ", ".join(f"{s} {b['wall']:.2f} s" for s, b in r["stages"].items()),
                      flush=True)
    print_tables(results)
    print(f"\nText functions alone, MB/s on one core, best of {max(3, args.repeat)} "
          "(batches of 1024 documents; WordArrays is the filter's one\n"
          "tokenization, shared by quality, offensive, dedup and audit, whose figures exclude it):\n")
    names = list(next(iter(rates.values()), {}))
    print("| corpus | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for corpus, r in rates.items():
        print(f"| {corpus} | " + " | ".join(f"{r[n]:.1f}" for n in names) + " |")


if __name__ == "__main__":
    main()
