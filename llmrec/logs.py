"""Logging for every tool of train, export and serving: JSON lines for machines, readable lines for a person.

An event is a plain stdlib call, `logger.info("triton_exited", extra={"pid": 100})`: the message names the
event, `extra` carries its fields. JSON (python-json-logger): one object per line, {"time", "level", "logger",
"event", **fields}. Text: the same record as one line, `time level logger: event key=value ...`. A terminal gets
text, anything else (a pipe, a file, a log collector) gets JSON; LLMREC_LOG_FORMAT=json|text decides instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LOG_FORMAT_ENV = "LLMREC_LOG_FORMAT"
LOG_FORMATS = ("json", "text")
STANDARD_ATTRS = frozenset(RESERVED_ATTRS) | {"taskName"}


def json_formatter() -> logging.Formatter:
    return JsonFormatter("{asctime}{levelname}{name}{message}", style="{", datefmt="%Y-%m-%dT%H:%M:%S",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                                        "message": "event", "exc_info": "exception"},
                         json_default=str)


class TextFormatter(logging.Formatter):
    """`12:00:01 WARNING llmrec.triton: triton_exited pid=100 exit_code=-9`: one line a person reads."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={json.dumps(v, default=str) if isinstance(v, dict | list) else v}"
                          for k, v in record.__dict__.items() if k not in STANDARD_ATTRS and not k.startswith("_"))
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname} {record.name}: {record.getMessage()}"
        line = f"{line} {fields}" if fields else line
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
    handler.setFormatter(TextFormatter() if log_format() == "text" else json_formatter())
    root = logging.getLogger("llmrec")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False
    # FAISS reports at INFO every CPU-specific build it could not load before the one it does; a library
    # configuring the root logger (onnxruntime's quantization does) would print them all
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
