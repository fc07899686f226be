"""Stage logs in the Prefect UI: the `pipeline` and `model` loggers' INFO lines go to the flow run's Logs tab.

Prefect sends a logger's records to its API only through its API handler. PREFECT_LOGGING_EXTRA_LOGGERS
gives that handler to the loggers it names but leaves their level at the root logger's WARNING, so
`clean: kept 169 of 185 ...` and the training losses never arrived. `show_stage_logs()` attaches a
handler (once) and lowers the level to INFO (never raises it: a `quill -v` DEBUG stays). Every flow
and task calls it first, so it holds in `quill run`, in the process `quill serve` starts for each
flow run, and in task-runner workers, whatever the environment says.

The handler sends only records made inside a flow or task run: the same process may later call a
stage outside any run (a test, a notebook, `quill stage`), and Prefect's own handler would warn there.
"""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

STAGE_LOGGERS = ("pipeline", "model")


class RunLogHandler(APILogHandler):
    """Prefect's API log handler, silent outside flow and task runs."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
            super().emit(record)


def show_stage_logs() -> None:
    for name in STAGE_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            logger.addHandler(RunLogHandler())
