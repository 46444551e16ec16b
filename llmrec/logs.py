"""Logging for every tool of train, export and serving: JSON lines for machines, readable lines for a person.

JSON: one object per line with time, level and logger; a message that is itself a JSON object is merged into
the record (`log_event` writes those), anything else lands under "message". Text: the same record as one line,
`time level logger: event key=value ...`. A terminal gets text, anything else (a pipe, a file, a log collector)
gets JSON; LLMREC_LOG_FORMAT=json|text decides instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

LOG_FORMAT_ENV = "LLMREC_LOG_FORMAT"
LOG_FORMATS = ("json", "text")


def _event(message: str) -> dict[str, Any] | None:
    """The fields of a message written by log_event, None for a plain message."""
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a message that is itself a JSON object is merged in."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                               "logger": record.name}
        message = record.getMessage()
        parsed = _event(message)
        if parsed is not None:
            out.update(parsed)
        else:
            out["message"] = message
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


class TextFormatter(logging.Formatter):
    """`12:00:01 WARNING llmrec.triton: triton_exited pid=100 exit_code=-9`: one line a person reads."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        fields = _event(message)
        if fields is not None:
            event = fields.pop("event", "")
            message = " ".join([str(event), *(f"{k}={json.dumps(v, default=str) if isinstance(v, dict | list) else v}"
                                              for k, v in fields.items())]).strip()
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname} {record.name}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class StderrHandler(logging.StreamHandler):
    """Writes to the sys.stderr of the moment, not the one at set-up: a stderr replaced later (a test
    runner's capture, a daemon's redirect) must not leave a handler writing into a closed file."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        """Above the progress bars when tqdm draws some (a line written under a bar would split it)."""
        bars = sys.modules.get("tqdm")
        if bars is None or not getattr(bars.tqdm, "_instances", None):
            super().emit(record)
            return
        try:
            bars.tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def log_format() -> str:
    """"json" or "text": LLMREC_LOG_FORMAT when set, else text on a terminal and JSON anywhere else."""
    chosen = os.environ.get(LOG_FORMAT_ENV, "").strip().lower()
    if chosen and chosen not in LOG_FORMATS:
        raise ValueError(f"{LOG_FORMAT_ENV} must be one of {LOG_FORMATS}, got {chosen!r}")
    return chosen or ("text" if sys.stderr.isatty() else "json")


def setup_logging(verbose: bool = True) -> None:
    """Every `llmrec.*` logger to stderr (INFO, or WARNING when not verbose), as log_format() says."""
    handler = StderrHandler()
    handler.setFormatter(TextFormatter() if log_format() == "text" else JsonFormatter())
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
