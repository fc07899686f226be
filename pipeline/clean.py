"""Clean: normalise text, strip boilerplate, enforce length bounds and keep the configured languages.

    quill stage clean --input data/runs/dev/ingest/manifest.json --out data/runs/dev/clean

The text functions live in `pipeline.textclean`; this module is the stage around them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config import CleanConfig
from pipeline.docs import Sieve, iter_docs
from pipeline.manifest import Manifest, input_refs, read_manifest, run_stage
from pipeline.textclean import clean_text, detect_language

log = logging.getLogger(__name__)


def clean(in_manifest: Path, out_dir: Path, cfg: CleanConfig, force: bool = False) -> Manifest:
    return run_stage("clean", out_dir, input_refs([in_manifest]), cfg, lambda tmp: _clean(in_manifest, tmp, cfg), force=force)


def clean_reason(text: str, cfg: CleanConfig) -> tuple[str, str, float | None]:
    """('', '', None) to keep; else (reason, detail, score) for the first failing check."""
    if len(text) < cfg.min_chars:
        return "too_short", f"{len(text)} chars < {cfg.min_chars}", None
    if len(text) > cfg.max_chars:
        return "too_long", f"{len(text)} chars > {cfg.max_chars}", None
    if cfg.languages:
        lang, score = detect_language(text)
        if lang not in cfg.languages or score < cfg.min_language_score:
            return "language", f"{lang} ({score:.2f})", score
    return "", "", None


def _clean(in_manifest: Path, stage_dir: Path, cfg: CleanConfig) -> tuple[dict, dict]:
    source = read_manifest(in_manifest)
    sieve, changed = Sieve(stage_dir), 0
    for doc in iter_docs(source.output_list("docs")):
        text = clean_text(doc["text"], cfg)
        changed += text != doc["text"]
        reason, detail, score = clean_reason(text, cfg)
        if reason:
            sieve.drop(doc, reason, detail, score)  # quarantine the original text, not the cleaned one
        else:
            sieve.keep({**doc, "text": text})
    outputs, stats = sieve.close("clean", {"docs_changed": changed})
    log.info("clean: kept %d of %d, dropped %s", stats["docs_kept"], stats["docs_in"], stats["dropped"])
    return outputs, stats
