"""Quill's stage logic: one module per stage, plain functions of paths and config (no Prefect here).

    ingest clean filter tokenize train evaluate register      the stages, in flow order (STAGES)
    config manifest sieve reports tracking pyfunc            what the stages share
    io/    sources, document and token shards, the executor  text/  the text kernels      eval/  what evaluate measures
"""

STAGES = ("ingest", "clean", "filter", "tokenize", "train", "evaluate", "register")
