"""SIGINT / SIGTERM as a stop request, safe however many signals arrive at once.

Why not `threading.Event.set()` in the handler: Python runs handlers on the main
thread between bytecodes, and `Event.set()` takes the Event's (non-reentrant)
lock; a second signal delivered while the first handler holds it re-enters on
the same thread and blocks forever. That was seen: a burst of SIGTERMs from a
dying parent (PR_SET_PDEATHSIG) left a gateway and its Triton running, orphaned.
Here the handler only assigns a bool, and waiters poll it.
"""

from __future__ import annotations

import signal
import time
from types import TracebackType

POLL_S = 0.1


class StopSignal:
    """`with StopSignal() as stop: ... stop.wait()`; `is_set()` / `wait(timeout)` like a threading.Event."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.signals = signals
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        self.requested = True  # an assignment: nothing to deadlock on, however often this runs

    def __enter__(self) -> StopSignal:
        self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def is_set(self) -> bool:
        return self.requested

    def wait(self, timeout: float | None = None) -> bool:
        """True once a stop was requested; False when `timeout` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.requested:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic())))
        return True
