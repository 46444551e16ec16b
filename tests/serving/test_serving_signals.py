"""Stop requests by signal: a burst of SIGTERMs (a dying parent, an impatient orchestrator) stops a process
instead of deadlocking it in its own handler."""

from __future__ import annotations

import os
import signal
import threading
import time

from serving.signals import StopSignal


def burst(count: int) -> threading.Thread:
    def send() -> None:
        for _ in range(count):
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_a_burst_of_signals_is_one_stop_request():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        assert not stop.is_set() and stop.wait(0.05) is False
        sender = burst(500)
        t0 = time.monotonic()
        assert stop.wait(10.0) is True and time.monotonic() - t0 < 10.0
        sender.join(10.0)
        assert not sender.is_alive()
        time.sleep(0.2)  # the last signals are handled too, and change nothing
        assert stop.is_set()
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
