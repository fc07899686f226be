"""Peak memory of the ingest stage on a large corpus: it must stay flat, well under 1 GB.

    .venv/bin/python benchmarks/ingest_memory.py               # 1.1 GB of synthetic text in /tmp, then deleted
    .venv/bin/python benchmarks/ingest_memory.py --gb 2 --tmp /data/scratch

Writes a synthetic corpus (never in the repository): a paragraph-split .txt file and a JSONL file,
each about half of `--gb`, from a pool of generated sentences (seeded). Then runs `ingest` in a
child process and reports that process's peak RSS (ru_maxrss), its wall time and MB/s, the number
of documents and shards, and the size of the output. Everything is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORDS = ("the a fox river lantern walked quietly over old bridge morning light garden sister brother small "
         "village baker winter snow bread window story night star sea boat sail friend laughed looked").split()


def sentences(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "." for _ in range(n)]


def write_corpus(folder: Path, total_bytes: int, seed: int = 0) -> int:
    """A .txt of blank-line paragraphs and a .jsonl of records, together about `total_bytes`; returns bytes written."""
    rng = random.Random(seed)
    pool = sentences(rng, 5000)
    written = 0
    with (open(folder / "big.txt", "w", encoding="utf-8") as txt,
          open(folder / "big.jsonl", "w", encoding="utf-8") as jl):
        while written < total_bytes:
            chunk = []
            for _ in range(2000):
                para = " ".join(rng.choices(pool, k=rng.randint(3, 12)))
                chunk.append(para)
            block = "\n\n".join(chunk) + "\n\n"
            lines = "".join(json.dumps({"text": p, "n": i}) + "\n" for i, p in enumerate(chunk))
            txt.write(block)
            jl.write(lines)
            written += len(block) + len(lines)
    return written


CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from pipeline.config import IngestConfig
from pipeline.ingest import ingest
start = time.perf_counter()
m = ingest([{src!r}], Path({out!r}), IngestConfig())
wall = time.perf_counter() - start
print(json.dumps({{"wall": wall, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "docs": m.stats["docs_kept"], "dropped": m.stats["dropped"], "shards": len(m.output_list("docs"))}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.1, help="size of the synthetic corpus")
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where to write it (deleted afterwards)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="quill-ingest-mem-", dir=args.tmp))
    try:
        (root / "corpus").mkdir()
        start = time.perf_counter()
        size = write_corpus(root / "corpus", int(args.gb * 2**30))
        print(f"wrote {size / 2**30:.2f} GB in {time.perf_counter() - start:.0f} s to {root / 'corpus'}", flush=True)
        code = CHILD.format(repo=str(REPO), src=str(root / "corpus"), out=str(root / "run" / "ingest"))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"ingest failed: {out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        out_mb = sum(p.stat().st_size for p in (root / "run" / "ingest").rglob("*.parquet")) / 2**20
        print("\n| input | docs | shards | wall s | MB/s | peak RSS MB | output MB (zstd Parquet) |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {size / 2**30:.2f} GB | {r['docs']:,} | {r['shards']} | {r['wall']:.0f} | "
              f"{size / 2**20 / r['wall']:.1f} | "
              f"{r['rss_mb']:.0f} | {out_mb:.0f} |")
        print(f"dropped: {r['dropped'] or 'none'}; peak RSS of the main benchmark process: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
