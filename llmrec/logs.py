"""Structured (JSON lines) logging, one record shape for every tool of train, export and serving.

One JSON object per line with time, level and logger; a message that is itself a JSON object is merged into
the record (`log_event` writes those), anything else lands under "message".
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a message that is itself a JSON object is merged in."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                               "logger": record.name}
        message = record.getMessage()
        try:
            parsed = json.loads(message)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            out.update(parsed)
        else:
            out["message"] = message
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


class StderrHandler(logging.StreamHandler):
    """Writes to the sys.stderr of the moment, not the one at set-up: a stderr replaced later (a test
    runner's capture, a daemon's redirect) must not leave a handler writing into a closed file."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr


def setup_logging(verbose: bool = True) -> None:
    """JSON lines on stderr for every `llmrec.*` logger (INFO, or WARNING when not verbose)."""
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("llmrec")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False
    # FAISS reports at INFO every CPU-specific build it could not load before the one it does; a library
    # configuring the root logger (onnxruntime's quantization does) would print them all
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event: {"event": event, **fields} as a JSON message."""
    logger.log(level, json.dumps({"event": event, **fields}, default=str))
