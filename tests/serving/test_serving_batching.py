"""The coalescing queue on its own: a lone call is dispatched at once (on the caller's thread), calls that arrive
together share a batch (and the window waits for more only then), the bound and the deadlines hold."""

from __future__ import annotations

import threading
import time

import pytest

from serving.gateway.errors import DeadlineExceeded, QueueFull
from serving.gateway.pipeline import BatchQueue


def recording_queue(window_s: float, run_s: float = 0.0, **options):
    batches: list[list[int]] = []

    def run(payloads, deadline):
        batches.append(list(payloads))
        time.sleep(run_s)
        return [p * 10 for p in payloads]

    settings = {"max_batch_size": 8, "max_wait_s": window_s, "max_queue": 64, "workers": 1} | options
    return BatchQueue("test", run, **settings).start(), batches


def test_a_lone_call_does_not_wait_for_the_window():
    q, batches = recording_queue(window_s=2.0)
    try:
        t0 = time.monotonic()
        assert q.call(7) == 70
        assert time.monotonic() - t0 < 0.5  # the 2 s window is not waited for
        assert batches == [[7]]
    finally:
        q.stop()


def test_a_lone_call_runs_on_the_callers_thread_and_busy_slots_send_calls_to_the_workers():
    threads: list[tuple[list[int], int]] = []
    release = threading.Event()

    def run(payloads, deadline):
        threads.append((list(payloads), threading.get_ident()))
        if payloads[0] == 0:
            release.wait(5)  # holds the only slot
        return [p * 10 for p in payloads]

    q = BatchQueue("test", run, max_batch_size=8, max_wait_s=0.0, max_queue=64, workers=1).start()
    try:
        assert q.call(5) == 50 and threads == [([5], threading.get_ident())]  # no hand-off for a lone call
        holder = threading.Thread(target=q.call, args=(0,))
        holder.start()
        time.sleep(0.05)  # [0] runs on holder's thread and holds the slot
        futures = [q.submit(i) for i in (1, 2, 3)]
        caller = threading.Thread(target=lambda: futures.append(q.call(4)))
        caller.start()
        time.sleep(0.05)
        assert [b for b, _ in threads] == [[5], [0]]  # the slot is taken: nothing else ran meanwhile
        release.set()
        holder.join(5)
        caller.join(5)
        assert [f.result(5) for f in futures[:3]] == [10, 20, 30] and futures[3] == 40
        # queued behind the busy slot, 1..4 ran as one batch on the worker (4's caller found the queue non-empty)
        assert [b for b, _ in threads][2:] == [[1, 2, 3, 4]]
        assert threads[2][1] not in {threading.get_ident(), holder.ident, caller.ident}
    finally:
        q.stop()


def test_calls_queued_together_share_one_batch_and_the_window_gathers_more():
    q, batches = recording_queue(window_s=0.3, run_s=0.2)
    try:
        first = q.submit(0)
        time.sleep(0.05)  # the worker runs [0] alone; these queue behind it
        futures = [q.submit(i) for i in range(1, 4)]
        late = threading.Timer(0.1, lambda: futures.append(q.submit(4)))  # arrives while the window is open
        late.start()
        late.join()
        time.sleep(0.01)
        assert first.result(5) == 0 and [f.result(5) for f in futures] == [10, 20, 30, 40]
        assert batches == [[0], [1, 2, 3, 4]]
    finally:
        q.stop()


def test_the_bound_and_a_passed_deadline():
    q, _ = recording_queue(window_s=0.0, run_s=0.3, max_queue=2)
    try:
        running = q.submit(1)
        time.sleep(0.05)
        q.submit(2, deadline=time.monotonic() + 0.01)
        q.submit(3)
        with pytest.raises(QueueFull, match="full"):
            q.submit(4)
        assert running.result(5) == 10
        with pytest.raises(DeadlineExceeded):
            q.call(5, deadline=time.monotonic() - 1)
    finally:
        q.stop()
