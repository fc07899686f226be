"""Markdown summaries of stage manifests, for Prefect artifacts, MLflow and the terminal."""

from __future__ import annotations

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
