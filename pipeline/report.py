"""Markdown summaries of stage manifests, for Prefect artifacts, MLflow and the terminal."""

from __future__ import annotations

import json

from pipeline.manifest import Manifest


def stage_summary(m: Manifest) -> str:
    s = m.stats
    lines = [f"# {m.stage}", "", f"`{m.path}`" + (" (up to date, skipped)" if s.get("skipped") else ""), ""]
    if "docs_in" in s:
        lines += [f"**{s['docs_kept']}** of {s['docs_in']} documents kept.", "", "| reason | dropped | examples |", "|---|---:|---|"]
        for reason, n in s.get("dropped", {}).items():
            shown = "<br>".join(e.replace("|", "\\|").replace("\n", " ") for e in s.get("examples", {}).get(reason, []))
            lines.append(f"| {reason} | {n} | {shown} |")
        lines.append("")
    scalars = {k: v for k, v in s.items() if isinstance(v, (int, float, str)) and k not in ("docs_in", "docs_kept", "skipped")}
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
    rows.append({"split": "total", "documents": sum(r["documents"] for r in rows), "tokens": sum(r["tokens"] for r in rows),
                 "shards": sum(r["shards"] for r in rows)})
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
        lines += [f"| {h['step']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | {h.get('val_bpb', float('nan')):.4f} |"
                  for h in points]
    if s.get("mlflow_run_id"):
        lines += ["", f"MLflow run `{s['mlflow_run_id']}` holds every step's metrics and the loss-curve plot."]
    return "\n".join(lines)
