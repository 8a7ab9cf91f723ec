"""Log lines, tagged by the host with the job key and fire id.

The host keeps a bounded number of bytes per run; past it, lines are dropped
and the run's log says so.
"""

from . import _host

LEVELS = ("trace", "debug", "info", "warn", "error")


def log(level: str, message: str) -> None:
    """Writes one line at ``level`` (one of :data:`LEVELS`)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {LEVELS}")
    _host.current().log(level, str(message))


def trace(message: str) -> None:
    """Logs at trace level."""
    log("trace", message)


def debug(message: str) -> None:
    """Logs at debug level."""
    log("debug", message)


def info(message: str) -> None:
    """Logs at info level."""
    log("info", message)


def warn(message: str) -> None:
    """Logs at warn level."""
    log("warn", message)


def error(message: str) -> None:
    """Logs at error level."""
    log("error", message)
