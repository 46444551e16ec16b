"""The coalescing queue: concurrent requests become one batched call.

Every call of the gateway that needs a model (or the index) puts its payload
on a `BatchQueue` and waits on a future. A worker thread takes the first
waiting payload with everything already queued behind it; when others were
queued (calls are arriving), it keeps collecting for at most `max_wait_s` (or
until `max_batch_size` payloads), then hands the whole batch to `run_batch` —
one Triton call and one index search for all of them. A call that finds the
queue empty is dispatched at once: a window that waits for company nobody
is sending only adds latency. Under load batches fill up (calls queue while
the workers run), so throughput grows with concurrency.

The queue is bounded: when `max_queue` payloads are already waiting, `submit`
raises `QueueFull` (RESOURCE_EXHAUSTED) at once instead of letting latency grow
without limit. Payloads whose deadline passed while queued are answered with
DEADLINE_EXCEEDED and left out of the batch. `workers` > 1 lets one batch
gather while another runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from llmrec.logs import log_event

from .errors import BackendUnavailable, DeadlineExceeded, GatewayError, QueueFull

logger = logging.getLogger("llmrec.gateway")

P = TypeVar("P")
R = TypeVar("R")

# run_batch(payloads, deadline) -> one result per payload (a GatewayError instance fails that payload only)
BatchFunction = Callable[[Sequence[Any], float | None], Sequence[Any]]


@dataclass
class _Pending(Generic[P]):
    payload: P
    deadline: float | None  # time.monotonic() value
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


_STOP = object()


class BatchQueue(Generic[P, R]):
    """A bounded queue whose worker threads run `run_batch` on groups of payloads."""

    def __init__(self, name: str, run_batch: BatchFunction, *, max_batch_size: int, max_wait_s: float,
                 max_queue: int, workers: int = 1,
                 observe: Callable[[str, int, float, float], None] | None = None) -> None:
        """`observe(name, batch_size, queue_wait_s, run_s)` is told about every batch (metrics)."""
        self.name = name
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.workers = workers
        self.observe = observe
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    def start(self) -> BatchQueue[P, R]:
        for i in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"batch-{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, payload: P, deadline: float | None = None) -> Future:
        """Queue one payload; its future gets the result. QueueFull when `max_queue` payloads are waiting."""
        if self._stopped.is_set():
            raise BackendUnavailable(f"the {self.name} queue is shut down")
        pending: _Pending[P] = _Pending(payload, deadline)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            raise QueueFull(f"the {self.name} queue is full ({self._queue.maxsize} waiting requests); retry with "
                            "backoff") from None
        return pending.future

    def call(self, payload: P, deadline: float | None = None) -> R:
        """Submit and wait for the result until `deadline`; the payload's GatewayError is raised here."""
        future = self.submit(payload, deadline)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            raise DeadlineExceeded(f"the deadline passed while the {self.name} batch was running") from None

    # ------------------------------------------------------------------ worker
    def _gather(self, first: _Pending[P]) -> list[_Pending[P]]:
        batch = [first]
        close_at = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = close_at - time.monotonic()
            try:
                if len(batch) > 1 and remaining > 0:  # others were queued: calls are arriving, wait for more
                    item = self._queue.get(timeout=remaining)
                else:  # only what is already queued: a lone call goes at once
                    item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)  # for the next worker; this one finishes its batch first
                break
            batch.append(item)
        return batch

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                self._queue.put(_STOP)
                return
            batch = self._gather(first)
            now = time.monotonic()
            live: list[_Pending[P]] = []
            for pending in batch:
                if not pending.future.set_running_or_notify_cancel():
                    continue  # the caller gave up
                if pending.deadline is not None and pending.deadline <= now:
                    pending.future.set_exception(DeadlineExceeded(
                        f"the deadline passed while the request waited in the {self.name} queue"))
                    continue
                live.append(pending)
            if not live:
                continue
            deadlines = [p.deadline for p in live if p.deadline is not None]
            deadline = max(deadlines) if len(deadlines) == len(live) else None
            wait = now - min(p.enqueued for p in live)
            t0 = time.perf_counter()
            try:
                results = self.run_batch([p.payload for p in live], deadline)
                if len(results) != len(live):
                    raise RuntimeError(f"{self.name}: run_batch returned {len(results)} results for {len(live)}")
            except GatewayError as error:
                results = [error] * len(live)
            except Exception as error:  # a bug or an unexpected backend failure: log it, answer INTERNAL
                log_event(logger, "batch_failed", logging.ERROR, queue=self.name, size=len(live),
                          error=f"{type(error).__name__}: {error}")
                logger.debug("batch failure", exc_info=True)
                results = [GatewayError("INTERNAL", f"the {self.name} batch failed (see the gateway log)")] * len(live)
            run = time.perf_counter() - t0
            for pending, result in zip(live, results, strict=True):
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
            if self.observe is not None:
                self.observe(self.name, len(live), wait, run)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers after the batches in flight; payloads still queued get UNAVAILABLE."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and item.future.set_running_or_notify_cancel():
                item.future.set_exception(BackendUnavailable("the gateway is shutting down"))
        self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)
