"""structlog set up once per process: key=value on a terminal, JSON otherwise.

Modules call ``structlog.get_logger()`` and bind per batch with contextvars;
nothing binds at import time."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

__all__ = ["configure_logging"]

_SECRET_KEYS = frozenset({"password", "secret", "client_secret", "token", "authorization", "dsn"})


def _drop_secrets(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    # A last line of defence: callers never pass secrets, but a key that names
    # one is masked rather than trusted.
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "***"
    return event_dict


class _StderrLogger:
    """Writes each line to whatever ``sys.stderr`` is at that moment, so a
    logger made before the stream was swapped (test capture, daemonising)
    never writes to a closed file."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _StderrLoggerFactory:
    def __call__(self, *args: object) -> _StderrLogger:
        return _StderrLogger()


def configure_logging(
    fmt: Literal["console", "json", "auto"] = "auto", level: str = "info"
) -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library; keep them quiet unless asked.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
    # aiokafka reports every leader election and metadata refresh it retries
    # by itself (at ERROR, on a topic created a moment ago, and once per
    # reconnect attempt, thousands a minute, while the broker is away); what
    # it cannot recover from reaches tablesync as an exception and is logged
    # there. Even at debug, which is for tablesync's own decisions.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # asyncpg's pool prints a traceback each time it fails to reconnect while
    # PostgreSQL restarts; tablesync logs the outage once, as transient_failure.
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
