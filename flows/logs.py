"""Stage logs in the Prefect UI: the `pipeline` and `model` loggers' INFO lines go to the flow run's Logs tab.

Prefect sends a logger's records to its API only when the logger has Prefect's API handler; it gives
that handler to the loggers named in PREFECT_LOGGING_EXTRA_LOGGERS, but leaves their level at the
root logger's WARNING, so `clean: kept 169 of 185 ...` and the training losses never arrived.
`show_stage_logs()` attaches the handler (once) and lowers the level to INFO (never raises it: a
`quill -v` DEBUG stays). Every flow and task calls it first, so it holds in `quill run`, in the
processes `quill serve` starts for each flow run, and in task-runner workers, whatever the
environment says.
"""

from __future__ import annotations

import logging

STAGE_LOGGERS = ("pipeline", "model")


def show_stage_logs() -> None:
    from prefect.logging.handlers import APILogHandler

    api = [h for h in logging.getLogger("prefect.extra").handlers if isinstance(h, APILogHandler)]
    for name in STAGE_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            logger.addHandler(api[0] if api else APILogHandler())
