"""What a run started from make (`make run`, `make backfill`, `make compact`, `make check`, `make demo`) prints while it
goes: one short line an event, and for an expected failure (a refused credential, a dead end, a failed check: every
`dg.Failure` the project raises) its cause and fix on one line, without a traceback.

A bug (any other exception) still prints its traceback here. Either way the run's own log in the UI keeps the
whole error, stack included, and runs the UI or the daemon launch use Dagster's console logger, so their compute
logs keep it too: `make` selects this logger by its run config (`{"loggers": {"brief": ...}}`).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import dagster as dg
from dagster._core.log_manager import LOG_RECORD_METADATA_ATTR

NAME = "brief"
# The run config `make` passes (`launch --config-json`): this logger at INFO, instead of Dagster's console logger.
RUN_CONFIG = {"loggers": {NAME: {"config": {"log_level": "INFO"}}}}


def expected_failure(error: Any) -> bool:
    """Whether a step's error (`SerializableErrorInfo`) is a failure the project raised on purpose, or a blocking
    check's verdict."""
    return error is not None and error.cls_name in ("Failure", "DagsterAssetCheckFailedError")


def failure_text(event: Any) -> str | None:
    """The cause of a failed step as one line (an expected failure's description), or None when `event` is not
    a step failure."""
    if event is None or not getattr(event, "is_step_failure", False):
        return None
    data = event.event_specific_data
    error = getattr(data, "error", None)
    user = getattr(data, "user_failure_data", None)
    if expected_failure(error) and user is not None and user.description:
        return " ".join(str(user.description).split())
    text = " ".join(str(error.message if error is not None else event.message).split())
    return text.removeprefix("dagster._core.errors.DagsterAssetCheckFailedError: ")


class _Quieter(logging.Filter):
    """Leaves out what the lines around it already say: the checks that skipped a day each said why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not yield or return expected outputs" not in record.getMessage()


class BriefFormatter(logging.Formatter):
    """`HH:MM:SS LEVEL step: message`; a step failure's cause on the same line; a bug's traceback below it."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, LOG_RECORD_METADATA_ATTR, None) or {}
        event = meta.get("dagster_event")
        text = str(meta.get("orig_message") or record.getMessage())
        cause = failure_text(event)
        if cause is not None:
            error = getattr(event.event_specific_data, "error", None)
            text = f"failed: {cause}"
            if not expected_failure(error) and error is not None:
                text += "\n" + error.to_string().rstrip()
        step = meta.get("step_key")
        if step and text.startswith(f"Dependencies for step {step} failed"):
            text = "not run: a step it depends on failed"
        when = time.strftime("%H:%M:%S", time.gmtime(record.created))
        return f"{when} {record.levelname:<7} {step + ': ' if step else ''}{text}"


@dg.logger(
    config_schema={
        "log_level": dg.Field(str, is_required=False, default_value="INFO"),
        "name": dg.Field(str, is_required=False, default_value="activity_pipeline"),
    },
    description="One short line an event on the console; an expected failure's cause on one line, no traceback.",
)
def brief_console(init_context: dg.InitLoggerContext) -> logging.Logger:
    config = init_context.logger_config
    logger = logging.getLogger(f"{config['name']}.run.{init_context.run_id}")
    logger.setLevel(config["log_level"].upper())
    logger.propagate = False
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(BriefFormatter())
    handler.addFilter(_Quieter())
    logger.addHandler(handler)
    return logger


LOGGERS = {"console": dg.colored_console_logger, NAME: brief_console}
