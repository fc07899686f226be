"""Per-stage data report for ingest, clean and filter: counts per reason, examples, histograms.

Written beside the stage's manifest as `report.md` plus `lengths.png` (document length in words,
kept vs dropped) and, when the stage scores documents, `scores.png`. The flow shows the Markdown
as a Prefect artifact and the register stage logs the folder to MLflow with the manifests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _histogram(path: Path, series: dict[str, list[float]], xlabel: str, log_x: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    values = [v for vs in series.values() for v in vs]
    if values:
        lo, hi = max(min(values), 1e-3) if log_x else min(values), max(values)
        bins = np.geomspace(lo, max(hi, lo * 1.01), 30) if log_x else np.linspace(lo, max(hi, lo + 1e-6), 30)
        for label, vs in series.items():
            if vs:
                ax.hist([max(v, lo) for v in vs] if log_x else vs, bins=bins, alpha=0.6, label=f"{label} ({len(vs)})")
        if log_x:
            ax.set_xscale("log")
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("documents")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_data_report(stage_dir: Path, stage: str, stats: dict[str, Any], lengths: dict[str, list[float]],
                      scores: dict[str, list[float]] | None = None) -> dict[str, str]:
    """Writes report.md and the PNGs into `stage_dir`; returns their names for the manifest outputs."""
    outputs = {"report": "report.md", "lengths_plot": "lengths.png"}
    _histogram(stage_dir / "lengths.png", lengths, "length (words, log scale)", log_x=True)
    if scores:
        _histogram(stage_dir / "scores.png", scores, "offensive score")
        outputs["scores_plot"] = "scores.png"
    lines = [f"# {stage} report", "", f"**{stats['docs_kept']}** of {stats['docs_in']} documents kept "
             f"({stats['bytes_kept']:,} bytes).", "", "| reason | dropped | examples |", "|---|---:|---|"]
    for reason, n in stats["dropped"].items():
        shown = "<br>".join(e.replace("|", "\\|").replace("\n", " ") for e in stats["examples"].get(reason, []))
        lines.append(f"| {reason} | {n} | {shown} |")
    extra = {k: v for k, v in stats.items() if k not in ("docs_in", "docs_kept", "dropped", "examples", "bytes_kept")}
    if extra:
        lines += ["", "| stat | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in extra.items()]
    lines += ["", "![lengths](lengths.png)"] + (["", "![scores](scores.png)"] if scores else [])
    (stage_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return outputs
