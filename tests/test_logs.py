"""One logging set-up for every tool: JSON lines when the reader is a machine, readable lines on a terminal."""

from __future__ import annotations

import io
import json
import logging

import pytest

from llmrec import logs


@pytest.fixture(autouse=True)
def restore_the_llmrec_logger():
    """setup_logging configures the process-wide `llmrec` logger: put it back for the tests that follow."""
    root = logging.getLogger("llmrec")
    saved = (root.handlers[:], root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def emit(monkeypatch, env: str | None, tty: bool) -> str:
    stream = io.StringIO()
    stream.isatty = lambda: tty  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", stream)
    if env is None:
        monkeypatch.delenv(logs.LOG_FORMAT_ENV, raising=False)
    else:
        monkeypatch.setenv(logs.LOG_FORMAT_ENV, env)
    logs.setup_logging()
    logger = logging.getLogger("llmrec.test")
    logger.warning("triton_exited", extra={"pid": 100, "ports": {"grpc": 2}})
    logger.info("plain words")
    return stream.getvalue()


def test_a_pipe_gets_json_lines_and_a_terminal_readable_ones(monkeypatch):
    first, second = (json.loads(line) for line in emit(monkeypatch, None, tty=False).splitlines())
    assert first["event"] == "triton_exited" and first["pid"] == 100 and first["ports"] == {"grpc": 2}
    assert first["level"] == "WARNING" and first["logger"] == "llmrec.test" and second["event"] == "plain words"
    lines = emit(monkeypatch, None, tty=True).splitlines()
    assert lines[0].endswith(' WARNING llmrec.test: triton_exited pid=100 ports={"grpc": 2}')
    assert lines[1].endswith(" INFO llmrec.test: plain words")
    assert json.loads(emit(monkeypatch, "json", tty=True).splitlines()[0])["pid"] == 100  # the variable decides
    assert emit(monkeypatch, "text", tty=False).splitlines()[1].endswith("llmrec.test: plain words")


def test_an_unknown_format_names_the_variable(monkeypatch):
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match="LLMREC_LOG_FORMAT must be one of"):
        logs.setup_logging()


def test_a_line_logged_under_a_progress_bar_goes_above_it(monkeypatch):
    """With a tqdm bar on the same stream, a log line is written by tqdm.write: the bar is cleared, the line
    printed whole on its own line, the bar redrawn after it (never `step 3/10 ... 12:00:01 INFO ...` on one line)."""
    from tqdm import tqdm

    stream = io.StringIO()
    stream.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, "text")
    logs.setup_logging()
    with tqdm(total=10, file=stream, desc="stage", mininterval=0, ascii=True) as bar:
        bar.update(3)
        logging.getLogger("llmrec.test").info("train_step", extra={"step": 3})
        bar.update(1)
    text = stream.getvalue()
    line = next(part for part in text.replace("\r", "\n").split("\n") if "train_step" in part)
    assert line.endswith("INFO llmrec.test: train_step step=3") and "stage" not in line  # whole, on its own
    assert text.rindex("4/10") > text.index("train_step")  # the bar goes on below it
