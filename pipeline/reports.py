"""Reports of what a stage did: the data report of ingest, clean and filter, and Markdown summaries of
any stage's manifest (for Prefect artifacts, MLflow and the terminal).

The data report (counts per reason, examples, histograms) is written beside the stage's manifest as `report.md`
plus `lengths.png` (document length in words,
kept vs dropped) and, when the stage scores documents, `scores.png`. Histograms use fixed bins
(log-spaced lengths, 0.05-wide scores), so a shard's counts are a short list of integers: memory
stays flat on any corpus size and shards processed in different places simply add up.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from pathlib import Path
from typing import Any

from pipeline.manifest import Manifest

LENGTH_EDGES = [0.0] + [10 ** (k / 8) for k in range(57)]  # 0, 1, 1.33, ... 10**7 words
SCORE_EDGES = [k / 20 for k in range(21)]  # 0.00, 0.05, ... 1.00


def empty_histogram(edges: list[float]) -> list[int]:
    return [0] * (len(edges) - 1)


def add_to_histogram(counts: list[int], edges: list[float], value: float) -> None:
    """Count `value` in its bin; values beyond the last edge land in the last bin."""
    i = min(max(bisect_right(edges, value) - 1, 0), len(counts) - 1)
    counts[i] += 1


def _plot(path: Path, series: dict[str, list[int]], edges: list[float], xlabel: str, log_x: bool) -> None:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    used = [i for hist in series.values() for i, n in enumerate(hist) if n]
    if used:
        lo, hi = min(used), max(used) + 1
        # A log axis costs twice the drawing time of a linear one: plot log10(x) and label the decades.
        x = [math.log10(max(e, 0.5)) for e in edges[lo:hi + 1]] if log_x else edges[lo:hi + 1]
        for label, hist in series.items():
            if any(hist):
                ax.stairs(hist[lo:hi], x, fill=True, alpha=0.5, label=f"{label} ({sum(hist)})")
        if log_x:
            decades = range(math.ceil(x[0]), math.floor(x[-1]) + 1)
            ax.set_xticks(list(decades), [f"{10 ** d:,}" for d in decades])
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("documents")
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.17, top=0.95)  # fixed margins: tight_layout costs ~1 s
    fig.savefig(path, pil_kwargs={"compress_level": 1})  # zlib's fastest level: ~5x less work than the default 6
    plt.close(fig)


def _cell(value: Any) -> str:
    text = (", ".join(f"{k}={v}" for k, v in value.items()) or "–") if isinstance(value, dict) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def write_data_report(stage_dir: Path, stage: str, stats: dict[str, Any], lengths: dict[str, list[int]],
                      scores: dict[str, list[int]] | None = None, sections: list[str] | None = None) -> dict[str, str]:
    """Writes report.md and the PNGs into `stage_dir`; returns their names for the manifest outputs.

    `lengths` and `scores` are histograms over LENGTH_EDGES and SCORE_EDGES; `sections` are extra
    Markdown lines (the filter stage's representation audit).
    """
    outputs = {"report": "report.md", "lengths_plot": "lengths.png"}
    _plot(stage_dir / "lengths.png", lengths, LENGTH_EDGES, "length (words, log scale)", log_x=True)
    if scores:
        _plot(stage_dir / "scores.png", scores, SCORE_EDGES, "offensive score", log_x=False)
        outputs["scores_plot"] = "scores.png"
    lines = [f"# {stage} report", "", f"**{stats['docs_kept']}** of {stats['docs_in']} documents kept "
             f"({stats['bytes_kept']:,} bytes).", "", "| reason | dropped | examples |", "|---|---:|---|"]
    for reason, n in stats["dropped"].items():
        shown = "<br>".join(_cell(e) for e in stats["examples"].get(reason, []))
        lines.append(f"| {reason} | {n} | {shown} |")
    skip = {"docs_in", "docs_kept", "dropped", "examples", "bytes_kept", "audit"}
    extra = {k: v for k, v in stats.items() if k not in skip}
    if extra:
        lines += ["", "| stat | value |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in extra.items()]
    lines += ["", "![lengths](lengths.png)"] + (["", "![scores](scores.png)"] if scores else [])
    if sections:
        lines += ["", *sections]
    (stage_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return outputs


# --- summaries of a stage's manifest ------------------------------------------------------------------


def stage_summary(m: Manifest) -> str:
    s = m.stats
    lines = [f"# {m.stage}", "", f"`{m.path}`" + (" (up to date, skipped)" if s.get("skipped") else ""), ""]
    if "docs_in" in s:
        lines += [f"**{s['docs_kept']}** of {s['docs_in']} documents kept.", "", "| reason | dropped | examples |",
                  "|---|---:|---|"]
        for reason, n in s.get("dropped", {}).items():
            shown = "<br>".join(e.replace("|", "\\|").replace("\n", " ") for e in s.get("examples", {}).get(reason, []))
            lines.append(f"| {reason} | {n} | {shown} |")
        lines.append("")
    scalars = {k: v for k, v in s.items() if isinstance(v, (int, float, str)) and k not in ("docs_in", "docs_kept",
        "skipped")}
    if scalars:
        lines += ["| stat | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in scalars.items()]
    for key in ("pii_redacted",):
        if s.get(key):
            lines += ["", f"{key}: " + ", ".join(f"{k}={v}" for k, v in s[key].items())]
    return "\n".join(lines)


def token_stats(m: Manifest) -> list[dict]:
    """Documents, tokens and shards per split (and in total) of a tokenize manifest, as table rows."""
    s = m.stats
    rows = [{"split": split, "documents": s[f"docs_{split}"], "tokens": s[f"tokens_{split}"],
             "shards": s.get(f"shards_{split}", len(m.outputs.get(split, [])))} for split in ("train", "val")]
    rows.append({"split": "total", **{k: sum(r[k] for r in rows) for k in ("documents", "tokens", "shards")}})
    for row in rows:
        row["tokens_per_doc"] = round(row["tokens"] / max(1, row["documents"]), 1)
    return rows


def training_summary(m: Manifest) -> str:
    """The train stage in a few lines: size, data seen, final losses and the validation points."""
    s = m.stats
    lines = [f"# Training summary{' (up to date, skipped)' if s.get('skipped') else ''}", "",
             f"**{s.get('n_params', 0):,}** parameters, **{s.get('steps', 0)}** steps"
             f" ({s.get('tokens_seen', 0):,} tokens) on `{s.get('device')}` in {s.get('train_seconds', 0):.0f} s"
             + (f", resumed from step {s['resumed_from']}" if s.get("resumed_from") else "") + ".", ""]
    finals = {k: v for k, v in s.items() if k == "train_loss" or k.startswith("val_")}
    if finals:
        lines += ["| final | value |", "|---|---:|"] + [f"| {k} | {v:.4f} |" for k, v in finals.items()] + [""]
    history = m.output("history") if "history" in m.outputs else None
    points = json.loads(history.read_text()) if history and history.exists() else []
    points = [h for h in points if "val_loss" in h]
    if points:
        lines += ["| step | train loss | val loss | val bpb |", "|---:|---:|---:|---:|"]
        lines += [f"| {h['step']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | "
                  f"{h.get('val_bpb', float('nan')):.4f} |" for h in points]
    if s.get("mlflow_run_id"):
        lines += ["", f"MLflow run `{s['mlflow_run_id']}` holds every step's metrics and the loss-curve plot."]
    return "\n".join(lines)


# --- model card -----------------------------------------------------------------------------------

INTENDED_USE = """\
## Intended use and limits

- Intended for: drafting and experimenting with short creative text (stories, poems, dialogue) in
  the style of the training corpus; studying small language models and the data pipeline behind them.
- Not for: facts, advice (medical, legal, financial), decisions about people, or any text shown to
  users without a person reading it first. A model of this size makes things up, repeats itself and
  loses the thread over long passages.
- The filter stage removes offensive and personal content by rule and classifier; neither is
  perfect, so generated text can still be offensive, biased or echo training text (see memorisation
  below). The bias probes are small English test sets: a result near 0.5 (stereotype preference)
  or 0 (sentiment gap) is no proof that the model is unbiased.
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(rows: list[tuple[str, Any]]) -> str:
    return "\n".join(["| | |", "| --- | --- |", *(f"| {k} | {_fmt(v)} |" for k, v in rows if v is not None)])


def model_card(manifests: dict[str, Manifest], model_config: dict[str, Any], name: str) -> str:
    """A model card (Markdown) from the stage manifests of one run (stage -> manifest) and the GPTConfig fields.

    Every figure comes from a manifest: data sources and counts, what clean and filter dropped, the
    tokenizer, architecture and size, training tokens and FLOPs, validation bits per byte, the bias
    probes; then the intended use and limits.
    """
    out = [f"# {name}: a small Quill writing model", ""]
    ingest = manifests.get("ingest")
    if ingest is not None:
        sources = [ref.path for ref in ingest.inputs]
        out += ["## Data", "", f"Sources ({len(sources)}): " + ", ".join(f"`{s}`" for s in sources[:20])
                + (" ..." if len(sources) > 20 else ""), ""]
        rows = []
        for stage in ("ingest", "clean", "filter"):
            m = manifests.get(stage)
            if m is not None:
                dropped = ", ".join(f"{reason} {n:,}" for reason, n in sorted(m.stats.get("dropped", {}).items()) if n)
                rows.append(f"| {stage} | {_fmt(m.stats.get('docs_in', ''))} | {_fmt(m.stats.get('docs_kept', ''))} | "
                            f"{dropped or 'none'} |")
        out += ["| stage | documents in | kept | dropped (reason: count) |", "| --- | --- | --- | --- |", *rows, ""]
    tok = manifests.get("tokenize")
    if tok is not None:
        s = tok.stats
        out += ["## Tokenizer", "", _table([
            ("kind", "SentencePiece BPE, byte fallback (every string round-trips)"),
            ("vocabulary", s.get("vocab_size")), ("bytes per token", s.get("bytes_per_token")),
            ("training tokens", s.get("tokens_train")), ("validation tokens", s.get("tokens_val")),
            ("documents train / val", f"{s.get('docs_train', 0):,} / {s.get('docs_val', 0):,}"),
        ]), ""]
    train = manifests.get("train")
    c = model_config
    out += ["## Architecture", "", _table([
        ("model", f"decoder-only Transformer (GPT), pre-norm, {c.get('pos_encoding')} positions, GELU MLP"),
        ("layers / heads / width", f"{c.get('n_layer')} / {c.get('n_head')} / {c.get('n_embd')}"),
        ("context (tokens)", c.get("block_size")), ("vocabulary", c.get("vocab_size")),
        ("parameters (non-embedding)", train.stats.get("n_params") if train else None),
        ("tied embeddings / biases / qk-norm", f"{c.get('tie_weights')} / {c.get('bias')} / {c.get('qk_norm')}"),
    ]), ""]
    if train is not None:
        s = train.stats
        out += ["## Training", "", _table([
            ("steps", s.get("steps")), ("tokens seen", s.get("tokens_seen")), ("training FLOPs", s.get("train_flops")),
            ("device", s.get("device")), ("processes", s.get("world_size")), ("final train loss", s.get("train_loss")),
            ("seconds", s.get("train_seconds")),
        ]), ""]
    ev = manifests.get("evaluate")
    if ev is not None:
        s = ev.stats
        out += ["## Evaluation", "", "Held-out validation split of the same corpus; samples from the evaluate prompts.",
                "", _table([
                    ("validation bits per byte", s.get("val_bpb")), ("validation bits per character", s.get("val_bpc")),
                    ("validation perplexity (per token)", s.get("val_perplexity")), ("distinct-2", s.get("distinct_2")),
                    ("self-BLEU", s.get("self_bleu")), ("memorised 8-gram rate", s.get("memorised_ngram_rate")),
                ]), "", "### Bias and safety probes", "", _table([
                    ("offensive sample rate", s.get("offensive_sample_rate")),
                    ("stereotype preference (0.5 = none)", s.get("stereotype_preference")),
                    ("stereotype pairs covered (share)", s.get("stereotype_coverage")),
                    ("sentiment gap across groups (0 = none)", s.get("sentiment_gap")),
                ]), ""]
    out += ["Per-category stereotype preferences, every metric and the samples are in the run's `evaluation/` "
            "artifacts (report.html, bias.json).", "", INTENDED_USE]
    return "\n".join(out)
