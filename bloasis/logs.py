"""Process logging: text (default) or JSON lines (BLOASIS_LOG_FORMAT=json), set up once by the CLI.

A JSON line is one object: `ts` (UTC ISO 8601), `level`, `logger`, `message`, `run_id` when
known, and `exc_info` for exceptions. The run id is what the registered run-id source says: the
Prefect flows register one that reads the current flow run id (the daily pipeline and the
backfill use that id as their pipeline run id), so this module knows nothing of Prefect. (Not a
ContextVar bound per run: Prefect's Dask runner pickles the context, and cannot pickle one.)
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Final

TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_run_id_source: Callable[[], str | None] | None = None


def set_run_id_source(source: Callable[[], str | None] | None) -> None:
    """Where the run id comes from (e.g. the orchestrator's current run)."""
    global _run_id_source
    _run_id_source = source


def current_run_id() -> str | None:
    if _run_id_source is None:
        return None
    try:
        return _run_id_source()
    except Exception:  # a log line must never fail because of its run id
        return None


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line. Also Prefect's console formatter in processes
    that Prefect configures (a worker's flow runs: `PREFECT_JSON_LOGGING`), where logging's
    dictConfig passes Prefect's `format: default`, which is ignored here."""

    def __init__(self, fmt: str | None = None, *args: object, **kwargs: object) -> None:
        super().__init__()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        run_id = current_run_id()
        if run_id is not None:
            out["run_id"] = run_id
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


_HANDLER_NAME: Final = "bloasis"


def configure_logging(
    level: str = "INFO", fmt: str = "text", *, stream: IO[str] | None = None
) -> logging.Handler:
    """Route every logger to one stderr handler in `fmt` at `level`; calling it again replaces
    that handler (never adds a second). Before Prefect is imported, so Prefect keeps it."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic announces each of its plugins at INFO on import, httpx every Prefect API request:
    # noise on every command (and it would follow a failing command's one-line error).
    for noisy in ("alembic.runtime.plugins", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


# Prefect's logging settings (overrides of its logging.yml, PREFECT_LOGGING_[PATH]_[KEY]) that
# make its console handler write these JSON lines: for the worker and the flow runs it starts.
PREFECT_JSON_LOGGING: Final = {
    "PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER": "json",
    "PREFECT_LOGGING_FORMATTERS_JSON_CLASS": f"{__name__}.JsonFormatter",
}
