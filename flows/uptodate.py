"""Whether `quill run` would do anything, found without Prefect: each stage checked against its manifest.

A rerun with nothing changed need not start the temporary Prefect server (most of its wall time): the
stages are called in flow order under `pipeline.manifest.check_only()`, which returns a manifest that is
current and raises NotUpToDate at the first stage that would run. Only the embedded default takes this
path; with PREFECT_API_URL set the flow runs as always, so the server records the (skipping) flow run.
"""

from __future__ import annotations

import json

from flows.params import FlowParams
from pipeline.manifest import Manifest, NotUpToDate, StageInputError, check_only


def finished_run(params: FlowParams) -> tuple[dict | None, list[str]]:
    """(the flow's result, one line per up-to-date stage) when every stage is up to date, else (None, lines
    up to and including the first stage that must run and why)."""
    from pipeline.clean import clean
    from pipeline.evaluate import evaluate
    from pipeline.filter import filter_docs
    from pipeline.ingest import ingest
    from pipeline.register import register
    from pipeline.tokenize import tokenize
    from pipeline.train import train

    cfg = params.config()
    root = params.run_dir(cfg)
    lines: list[str] = []

    def done(m: Manifest) -> Manifest:
        lines.append(f"{m.stage}: up to date ({m.path})")
        return m

    if params.train_processes > 1:  # torchrun's world size is part of train's config hash: let the flow decide
        return None, ["train: runs on several processes; the flow checks it"]
    try:
        with check_only():
            m = done(ingest(cfg.sources, root / "ingest", cfg.ingest))
            m = done(clean(m.path, root / "clean", cfg.clean))
            m = done(filter_docs(m.path, root / "filter", cfg.filter))
            m = done(tokenize(m.path, root / "tokenize", cfg.tokenize))
            m = done(train(m.path, root / "train", cfg.train, cfg.model))
            ev = done(evaluate(m.path, root / "evaluate", cfg.evaluate))
            reg = done(register(ev.path, root / "register", cfg.register))
    except NotUpToDate as exc:
        return None, [*lines, f"{exc.stage}: must run: {exc.why}"]
    except StageInputError as exc:  # a changed file upstream: the flow redoes what is needed
        return None, [*lines, str(exc)]
    result = json.loads(reg.output("registration").read_text())
    samples = [json.loads(line)["text"] for line in ev.output("samples").read_text().splitlines()]
    return {**result, "run_dir": str(root.resolve()), "samples": samples}, lines
