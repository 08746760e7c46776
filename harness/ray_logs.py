"""Ray's own console output, sent to a file so that a person sees our table and not Ray's noise.

An embedded search used to print, between the lines of its live table: Tune's experiment box, a
"View detailed results" line, a TensorBoard hint pointing into Ray's temporary session folder,
Train's "Checkpoint successfully created at ..." for every epoch of every trial, and ray.init's
token-authentication warning. Those go to ``<run folder>/ray.log`` instead; warnings and errors
from Ray still reach the console, so nothing that needs attention is hidden.

Set the environment before Ray is imported: Tune picks its reporter at import.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

# Ray's logger families whose INFO lines are progress chatter, in the driver and in the workers.
RAY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.data", "ray.air")
# ray.init's token-authentication notice is a WARNING about a default we keep (the embedded Ray
# listens on 127.0.0.1 only): it belongs in the log file, not between the table's lines.
_FILE_ONLY = ("authentication_token_setup",)


def quiet_reporter_env() -> None:
    """Tune's legacy reporter honours ``verbose=0`` (the new one prints its box and hints anyway)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and not record.pathname.endswith(
            tuple(f"{name}.py" for name in _FILE_ONLY))


_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def route_ray_logs() -> None:
    """Every record of Ray's loggers is kept for the log file (held in memory until
    :func:`attach_log_file` names it, since Ray starts before a new search's folder exists); only
    warnings and errors also reach the console."""
    console = logging.StreamHandler()
    console.addFilter(_ConsoleFilter())
    console.setFormatter(logging.Formatter("ray: %(levelname)s %(message)s"))
    held = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    held.set_name("irstdlab-held")
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = name != "ray"  # children reach the "ray" handlers
    root = logging.getLogger("ray")
    root.setLevel(logging.INFO)
    root.addHandler(console)
    root.addHandler(held)


def attach_log_file(log_file: Path) -> None:
    """Write what Ray logged so far, and everything after, to ``log_file``."""
    root = logging.getLogger("ray")
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setFormatter(logging.Formatter(_FILE_FORMAT))
    for handler in list(root.handlers):
        if handler.get_name() == "irstdlab-held" and isinstance(handler, logging.handlers.MemoryHandler):
            handler.setTarget(to_file)
            handler.flush()
            root.removeHandler(handler)
    root.addHandler(to_file)


def quiet_worker_logs() -> None:
    """In a trial's process: keep Train's per-report INFO lines (checkpoint created ...) out of the
    output that Ray forwards to the driver's console."""
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


__all__ = ["attach_log_file", "quiet_reporter_env", "quiet_worker_logs", "route_ray_logs"]
