"""What the data stages keep of books and stories: ingest -> clean -> filter with the default config (prose
profile), this working tree against a base revision (default: main), on ../shared/corpora/.

    .venv/bin/python -m benchmarks.creative_text                  # writes benchmarks/results/creative_text.md
    .venv/bin/python -m benchmarks.creative_text --base d8cd222

- gutenberg_creative: per book, the words between the Project Gutenberg START/END markers ("body words",
  whitespace tokens) against the words of the documents the filter keeps; documents and drops per reason;
  whether any kept document still holds the header or licence ("Project Gutenberg", "START OF", "END OF").
  A body paragraph "dropped for language" is a quarantined document, with body text, whose reason is language.
- tinystories_sample (train head, 1,000 stories): documents after ingest and after filter, and every document
  dropped with its reason and first words.
The base revision's `pipeline/` runs as `pipeline_base` (see benchmarks.compare). Corpora absent: skipped.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.compare import BASE, export_base, local_stages
from benchmarks.data_stages import REPO, SHARED

RESULTS = REPO / "benchmarks" / "results"
_START = re.compile(r"^\*{3} ?start of (?:this|the) project gutenberg.*$", re.I | re.M)
_END = re.compile(r"^\*{3} ?end of (?:this|the) project gutenberg.*$", re.I | re.M)
_LEFTOVER = re.compile(r"project gutenberg|\*{3} ?(?:start|end) of", re.I)


def body_words(path: Path) -> int:
    text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    start, end = _START.search(text), _END.search(text)
    return len(text[start.end() : end.start()].split())


def run_stages(package: str, sources: list[str], work: Path) -> dict:
    """Ingest, clean and filter with the default config of `package`, locally; kept and quarantined rows."""
    iter_docs = importlib.import_module(f"{package}.io.docshards").iter_docs
    import pyarrow.parquet as pq

    cfg = importlib.import_module(f"{package}.config").RunConfig()
    cfg.filter.audit.enabled = False
    m_in, m_cl, m_fi = local_stages(package, sources, work, cfg)
    dropped = [(stage, row) for stage, m in (("clean", m_cl), ("filter", m_fi))
               for p in m.output_list("excluded") for row in pq.read_table(p).to_pylist()]
    return {"ingested": m_in.stats["docs_kept"], "kept": list(iter_docs(m_fi.output_list("docs"))),
            "dropped": dropped}


def _label_of(doc_id: str) -> str:
    return doc_id.rsplit(":", 1)[0]


def gutenberg(package: str, work: Path) -> tuple[list[str], dict]:
    folder = SHARED / "gutenberg_creative"
    books = sorted(folder.glob("*.txt"))
    out = run_stages(package, [str(p) for p in books], work)
    kept_words = Counter()
    for doc in out["kept"]:
        kept_words[_label_of(doc["id"])] += len(doc["text"].split())
    body = {p.name: body_words(p) for p in books}
    leftovers = sum(bool(_LEFTOVER.search(d["text"])) for d in out["kept"])
    reasons = Counter(row["reason"] for _s, row in out["dropped"])
    # A dropped document holds body text unless clean cut it to nothing (header, licence) or it is the licence.
    language_body = sum(1 for _s, row in out["dropped"] if row["reason"] == "language")
    rows = []
    for name, words in body.items():
        label = next((k for k in kept_words if k.endswith(name)), name)
        rows.append(f"| {name} | {words:,} | {kept_words[label]:,} | {100 * kept_words[label] / words:.2f} % |")
    total_body, total_kept = sum(body.values()), sum(kept_words.values())
    rows.append(f"| **all** | {total_body:,} | {total_kept:,} | {100 * total_kept / total_body:.2f} % |")
    summary = {"docs_ingested": out["ingested"], "docs_kept": len(out["kept"]), "leftover_docs": leftovers,
               "kept_pct": 100 * total_kept / total_body, "dropped": dict(reasons.most_common()),
               "language_drops": language_body}
    return rows, summary


def tinystories(package: str, work: Path) -> tuple[dict, list[str]]:
    out = run_stages(package, [str(SHARED / "tinystories_sample" / "tinystories_train_head1000.txt")], work)
    reasons = Counter(row["reason"] for _s, row in out["dropped"])
    listed = [f"| {row['reason']} | {row.get('detail') or ''} | {' '.join(row['text'].split())[:90]} |"
              for _s, row in out["dropped"]]
    summary = {"docs_ingested": out["ingested"], "docs_kept": len(out["kept"]), "dropped": dict(reasons.most_common())}
    return summary, listed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="main", help="git revision to compare with (default: main)")
    ap.add_argument("--out", default=str(RESULTS / "creative_text.md"))
    args = ap.parse_args(argv)
    if not (SHARED / "gutenberg_creative").is_dir() or not (SHARED / "tinystories_sample").is_dir():
        sys.exit(f"skipped: {SHARED}/gutenberg_creative or tinystories_sample is absent")
    lines = ["# Books and stories through ingest -> clean -> filter (default config, prose profile)", "",
             f"Written by `python -m benchmarks.creative_text --base {args.base}`.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        commit = export_base(args.base, Path(tmp))
        sys.path.insert(0, tmp)
        for tag, package in ((f"base {args.base} ({commit[:7]})", BASE), ("this tree", "pipeline")):
            rows, g = gutenberg(package, Path(tmp) / tag / "gutenberg")
            ts, listed = tinystories(package, Path(tmp) / tag / "tinystories")
            lines += [f"## {tag}", "", "Gutenberg books:", "", "| book | body words | words kept | kept |",
                      "|---|---:|---:|---:|", *rows, "",
                      f"Documents: {g['docs_ingested']:,} ingested, {g['docs_kept']:,} kept; dropped per reason: "
                      f"{g['dropped']}; dropped for language: {g['language_drops']}; kept documents holding header "
                      f"or licence text: {g['leftover_docs']}.", "",
                      f"TinyStories (train head, 1,000 stories): {ts['docs_ingested']:,} documents ingested, "
                      f"{ts['docs_kept']:,} kept; dropped per reason: {ts['dropped']}.", ""]
            if tag == "this tree":
                lines += ["Every TinyStories document dropped:", ""]
                lines += ["| reason | detail | text |", "|---|---|---|", *listed, ""] if listed else ["none", ""]
            print("\n".join(lines[-12:]), flush=True)
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
