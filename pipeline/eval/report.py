"""The evaluate stage's report: Markdown and a self-contained HTML page of its metrics, and the attention map.

    render_markdown(metrics, samples, details)          -> report.md
    render_html(metrics, samples, details, images)      -> report.html (images inlined as base64)
    plot_attention(model, tok, ids, path, max_tokens)   -> attention_map.png
"""

from __future__ import annotations

import base64
import html
import math
import warnings
from pathlib import Path

from model.tokenizer import Tokenizer

SECTIONS = {
    "Validation (held-out shards)": ("val_",),
    "Samples": ("distinct_", "self_bleu", "seq_rep_4", "mean_length", "eos_stop_rate", "memorised_", "novelty"),
    "Bias and safety": ("offensive_", "stereotype_", "sentiment_"),
}


HELP = {
    "val_loss": "mean cross-entropy per token on the validation shards (nats)",
    "val_perplexity": "exp(val_loss)",
    "val_bpb": "bits per UTF-8 byte of held-out text (tokenizer-independent; register gates on it)",
    "val_bpc": "bits per character of held-out text",
    "val_tokens": "validation tokens scored",
    "distinct_1": "unique / all words over all samples (higher = more varied)",
    "distinct_2": "unique / all word 2-grams over all samples",
    "distinct_3": "unique / all word 3-grams over all samples",
    "self_bleu": "word BLEU-4 of each sample against the others (lower = samples differ more)",
    "seq_rep_4": "repeated word 4-grams within a sample (higher = more rambling loops)",
    "mean_length": "new tokens per sample",
    "eos_stop_rate": "share of samples that ended on eos before max_new_tokens",
    "memorised_ngram_rate": "share of sampled token n-grams found verbatim in the training shards",
    "novelty": "1 - memorised_ngram_rate",
    "offensive_sample_rate": "share of all generated texts the filter stage's classifier flags",
    "stereotype_preference": "share of covered pairs where the stereotyped sentence is likelier (0.5 = none)",
    "stereotype_coverage": "share of pairs whose differing words the vocabulary represents well",
    "sentiment_gap": "max - min of mean continuation sentiment across demographic groups",
}


def _sections(metrics: dict) -> dict[str, list[tuple[str, float, str]]]:
    def help_for(key: str) -> str:
        if key.startswith("stereotype_preference_"):
            return HELP.get(key) or "stereotype_preference within one category"
        return HELP.get(key, "")

    return {title: [(k, v, help_for(k)) for k, v in metrics.items() if k.startswith(prefixes)]
            for title, prefixes in SECTIONS.items()}


def render_markdown(metrics: dict, samples: list[dict], details: dict) -> str:
    lines = ["# Evaluation", ""]
    for title, items in _sections(metrics).items():
        lines += [f"## {title}", "", "| metric | value | meaning |", "|---|---:|---|"]
        lines += [f"| {k} | {v:.4f} | {h} |" for k, v, h in items] + [""]
    if "sentiment_by_group" in details:
        lines += ["Mean sentiment (VADER compound) of continuations by group:", ""]
        lines += ["| group | sentiment |", "|---|---:|"]
        lines += [f"| {g} | {v:+.3f} |" for g, v in details["sentiment_by_group"].items()] + [""]
    lines += ["Images: `report.html` (loss curve, attention map). Per-pair scores: `bias.json`.", "", "## Samples", ""]
    for s in samples:
        lines += [f"**{s['prompt']}**", "", "> " + s["text"].replace("\n", "\n> "), ""]
    return "\n".join(lines)


def _img(path: Path | None) -> str:
    if path is None or not Path(path).is_file():
        return "<p><em>not available</em></p>"
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def render_html(metrics: dict, samples: list[dict], details: dict, images: dict[str, Path | None]) -> str:
    """One self-contained page: metric tables, group sentiment, images inlined as base64, samples."""
    esc = html.escape
    parts = ["<!doctype html><meta charset='utf-8'><title>Quill evaluation</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:auto}td,th{padding:2px 8px}"
             "td.n{text-align:right;font-family:monospace}"
             "pre{white-space:pre-wrap;background:#f6f6f6;padding:6px}</style>",
             "<h1>Evaluation</h1>"]
    for title, items in _sections(metrics).items():
        rows = "".join(f"<tr><td>{esc(k)}</td><td class=n>{v:.4f}</td><td>{esc(h)}</td></tr>" for k, v, h in items)
        head = "<tr><th>metric</th><th>value</th><th>meaning</th></tr>"
        parts.append(f"<h2>{esc(title)}</h2><table>{head}{rows}</table>")
    if "sentiment_by_group" in details:
        rows = "".join(f"<tr><td>{esc(g)}</td><td class=n>{v:+.3f}</td></tr>"
                       for g, v in details["sentiment_by_group"].items())
        parts.append(f"<h3>Sentiment of continuations by group</h3><table>{rows}</table>")
    for title, path in images.items():
        parts.append(f"<h2>{esc(title)}</h2>{_img(path)}")
    parts.append("<h2>Samples</h2>")
    parts += [f"<p><b>{esc(s['prompt'])}</b>{' (eos)' if s['stopped_on_eos'] else ''}</p><pre>{esc(s['text'])}</pre>"
              for s in samples]
    return "\n".join(parts)


def plot_attention(model, tok: Tokenizer, ids: list[int], path: Path, max_tokens: int) -> None:
    """Heat-maps of attention weights (query rows, key columns), heads averaged, one panel per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    ids = ids[:max_tokens]
    device = model.transformer.wte.weight.device
    maps = model.attention_maps(torch.tensor([ids], device=device))  # n_layer x (1, nh, T, T)
    pieces = [tok.sp.id_to_piece(i).replace("\u2581", "_").replace("\n", "\\n") for i in ids]
    labels = ["<eos>" if i == tok.eos_id else piece for i, piece in zip(ids, pieces)]
    cols = min(len(maps), 4)
    rows = math.ceil(len(maps) / cols)
    side = 1.2 + 0.16 * len(ids)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows), dpi=100, squeeze=False)
    for layer, ax in enumerate(axes.flat):
        if layer >= len(maps):
            ax.axis("off")
            continue
        ax.imshow(maps[layer][0].mean(dim=0).float().cpu().numpy(), cmap="viridis", vmin=0.0)
        ax.set_title(f"layer {layer} (mean of heads)", fontsize=8)
        ax.set_xticks(range(len(ids)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(ids)), labels, fontsize=6)
    fig.suptitle("attention weights: rows = query token, columns = key token", fontsize=9)
    with warnings.catch_warnings():
        # pieces in scripts the default font lacks (CJK) are drawn as boxes; the map itself is right
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.tight_layout()
        fig.savefig(path)
    plt.close(fig)
