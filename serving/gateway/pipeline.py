"""The recommendation operators, independent of gRPC and of where the models run.

    Recommend: history ids -> item vectors (index) -> [batched] user encoder -> [batched] index top-k -> titles
    Embed:     texts -> [batched] item encoder -> vectors
    Upsert:    texts -> [batched] item encoder -> catalogue (recommendable and usable in histories at once)

`RecommendationPipeline` takes plain, checked values (service.py checks the wire's requests), a
backend (backends.py: Triton or in-process onnxruntime) and a catalogue
(serving/index/catalog.py: FAISS, or Milvus), so the gRPC server,
tests and the load benchmark's in-process baseline run the same code.

Histories are truncated to the user encoder's window (`max_len`, the SRS's
trained history length) and always left-padded to exactly `max_len`: every
request then has the same shape, Triton's batcher can join requests freely,
and a user's vector never depends on which other requests shared its batch.
History exclusion uses the whole history, not only the window (as the
offline evaluation does).

Batching (`BatchQueue`): concurrent requests become one batched call. Every
call of the gateway that needs a model (or the index) puts its payload on a
`BatchQueue` and waits on a future. A worker thread takes the first
waiting payload with everything already queued behind it; when others were
queued (calls are arriving), it keeps collecting for at most `max_wait_s` (or
until `max_batch_size` payloads), then hands the whole batch to `run_batch` —
one Triton call and one index search for all of them. A call that finds the
queue empty and a batch slot free runs at once, as a batch of one, on the
caller's own thread: a window that waits for company nobody is sending only
adds latency, and handing a lone call to a worker thread and back costs two
thread wake-ups. At most `workers` batches run at a time, inline or not.
Under load batches fill up (calls queue while the slots are busy), so
throughput grows with concurrency.

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

import numpy as np

from llmrec.names import ITEM_ENCODER, USER_ENCODER

from ..index.catalog import IdsExhausted, Item, ItemCatalog, MissingItems, NotDurable
from .backends import EncoderBackend
from .config import BatchingConfig
from .errors import BackendUnavailable, DeadlineExceeded, GatewayError, QueueFull
from .metrics import GatewayMetrics

logger = logging.getLogger("llmrec.gateway")

P = TypeVar("P")
R = TypeVar("R")

# run_batch(payloads, deadline) -> one result per payload (a GatewayError instance fails that payload only)
BatchFunction = Callable[[Sequence[Any], float | None], Sequence[Any]]


# ---------------------------------------------------------------------------------------------- requests
# what the pipeline is asked, checked (serving/gateway/service.py checks the wire's requests into these)
@dataclass(frozen=True)
class RecommendQuery:
    history: tuple[str, ...]  # catalogue ids, oldest first
    k: int
    exclude_history: bool = False
    exclude_ids: tuple[str, ...] = ()
    include_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewItem:
    id: str  # the catalogue id; "" = assign one
    title: str
    text: str  # what the item encoder embeds (the title when the request left it empty)
    attributes: dict[str, str] = field(default_factory=dict)


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
        self._slots = threading.BoundedSemaphore(workers)  # batches running, on a worker or a caller's thread
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
        """The payload's result, waited for until `deadline`; its GatewayError is raised here. Run on this thread
        when nothing is queued and a batch slot is free, else submitted to the workers."""
        if self._queue.empty() and not self._stopped.is_set() and self._slots.acquire(blocking=False):
            pending: _Pending[P] = _Pending(payload, deadline)
            pending.future.set_running_or_notify_cancel()
            try:
                self._run([pending], time.monotonic())
            finally:
                self._slots.release()
            return pending.future.result()
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
            with self._slots:
                batch = self._gather(first)
                now = time.monotonic()
                live = [p for p in batch if p.future.set_running_or_notify_cancel()]  # the others gave up
                self._run(live, now)

    def _run(self, batch: list[_Pending[P]], now: float) -> None:
        """Run one batch (futures already running): late payloads get DEADLINE_EXCEEDED, the others their result
        or the batch's error."""
        live: list[_Pending[P]] = []
        for pending in batch:
            if pending.deadline is not None and pending.deadline <= now:
                pending.future.set_exception(DeadlineExceeded(
                    f"the deadline passed while the request waited in the {self.name} queue"))
                continue
            live.append(pending)
        if not live:
            return
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
            logger.error("batch_failed", extra={"queue": self.name, "size": len(live),
                                                "error": f"{type(error).__name__}: {error}"})
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


MAX_LISTED_IDS = 10


@dataclass(frozen=True)
class Recommendation:
    id: str  # the catalogue id
    score: float
    title: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _UserJob:
    """One Recommend call inside a batch."""

    vectors: np.ndarray  # float32 [max_len, H], left-padded
    mask: np.ndarray  # int64 [max_len]
    k: int
    exclude: frozenset[str]  # catalogue ids never returned
    include: tuple[str, ...]  # catalogue ids to rank among (empty = the whole catalogue)
    include_vectors: np.ndarray  # their vectors, read when the call was checked


def _listed(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:MAX_LISTED_IDS])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > MAX_LISTED_IDS else "")


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the deadline passed before the model call")
    return left


class RecommendationPipeline:
    def __init__(self, backend: EncoderBackend, catalog: ItemCatalog, *, max_len: int,
                 batching: BatchingConfig | None = None, metrics: GatewayMetrics | None = None,
                 user_model: str = USER_ENCODER, item_model: str = ITEM_ENCODER) -> None:
        """`catalog`: the items, read and written in catalogue ids (serving/index/catalog.py over FAISS, with a
        durable log when persisting; or milvus_catalog.py); compacted in the background when it asks for it."""
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        batching = batching or BatchingConfig()
        self.backend = backend
        self.catalog = catalog
        catalog.observe = self._time_index  # its write and compaction times go to these metrics
        self.max_len = int(max_len)
        self.metrics = metrics
        self.user_model = user_model
        self.item_model = item_model
        observe = self._observe_batch if metrics is not None else None
        common = dict(max_batch_size=batching.max_batch_size, max_wait_s=batching.max_wait_ms / 1000.0,
                      max_queue=batching.max_queue, workers=batching.workers, observe=observe)
        self.recommend_queue: BatchQueue = BatchQueue("recommend", self._run_users, **common)
        self.embed_queue: BatchQueue = BatchQueue("embed", self._run_texts, **common)
        self._compact_wanted = threading.Event()
        self._stopping = threading.Event()
        self._compactor: threading.Thread | None = None
        if metrics is not None:
            metrics.track_queue_depth("recommend", self.recommend_queue.depth)
            metrics.track_queue_depth("embed", self.embed_queue.depth)
            metrics.index_items.set(len(catalog))

    # ------------------------------------------------------------------ life cycle
    def start(self) -> RecommendationPipeline:
        self.recommend_queue.start()
        self.embed_queue.start()
        if self.catalog.durable is not None:
            self._compactor = threading.Thread(target=self._compact_loop, name="catalog-compactor", daemon=True)
            self._compactor.start()
        return self

    def stop(self) -> None:
        """Stop the queues; with a catalogue, compact it into a snapshot and close its log."""
        self.recommend_queue.stop()
        self.embed_queue.stop()
        self._stopping.set()
        self._compact_wanted.set()
        if self._compactor is not None:
            self._compactor.join(timeout=60.0)
            self._compactor = None
        try:
            self.catalog.close(compact=True)
        except Exception:  # the log is durable anyway: the next start replays it
            logger.exception("compaction at shutdown failed; the write-ahead log will be replayed")

    def _compact_loop(self) -> None:
        """Compaction off the callers' path: a write that crosses `compact_every` only wakes this thread."""
        while True:
            self._compact_wanted.wait()
            self._compact_wanted.clear()
            if self._stopping.is_set():
                return
            try:
                self.catalog.compact()
            except Exception:  # keep serving: the log still holds every write, compaction is retried later
                logger.exception("catalogue compaction failed")

    def ready(self) -> bool:
        return len(self.catalog) > 0 and self.backend.ready()

    # ------------------------------------------------------------------ timing helpers
    def _time_model(self, model: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.model_seconds.labels(model).observe(seconds)

    def _time_index(self, operation: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.index_seconds.labels(operation).observe(seconds)

    def _time_stage(self, queue: str, stage: str, seconds: float, requests: int) -> None:
        """A batch's stage took `seconds` and every one of its `requests` waited for all of it."""
        if self.metrics is not None:
            self.metrics.request_stage.labels(queue, stage).inc(seconds * requests)

    def _observe_batch(self, queue: str, size: int, wait_s: float, run_s: float) -> None:
        self.metrics.batch_size.labels(queue).observe(size)
        self.metrics.batch_wait.labels(queue).observe(wait_s)

    # ------------------------------------------------------------------ Recommend
    def _vectors(self, keys: Sequence[str], field: str) -> np.ndarray:
        """Vectors of catalogue ids; NOT_FOUND naming the ids the catalogue does not hold."""
        t0 = time.perf_counter()
        try:
            vectors = self.catalog.vectors_of(keys)
        except MissingItems as error:
            raise GatewayError("NOT_FOUND", f"{field} holds item ids that are not in the catalogue: "
                                            f"{_listed(error.keys)}") from None
        self._time_index("vectors", time.perf_counter() - t0)
        return vectors

    def recommend(self, query: RecommendQuery, deadline: float | None = None) -> list[Recommendation]:
        """Top-k items after `query.history` (validated). NOT_FOUND names history ids the catalogue lacks."""
        item_vectors = self._vectors(query.history, "history")[-self.max_len:]  # every id must exist
        window = len(item_vectors)
        include = self._vectors(query.include_ids, "filter.include_ids") if query.include_ids else None
        vectors = np.zeros((self.max_len, item_vectors.shape[1]), dtype=np.float32)
        mask = np.zeros(self.max_len, dtype=np.int64)
        vectors[self.max_len - window:] = item_vectors
        mask[self.max_len - window:] = 1
        exclude = set(query.exclude_ids) | (set(query.history) if query.exclude_history else set())
        job = _UserJob(vectors, mask, query.k, frozenset(exclude), tuple(query.include_ids), include)
        hits = self.recommend_queue.call(job, deadline)
        return [Recommendation(item.key, score, item.title, dict(item.attributes)) for item, score in hits]

    def _run_users(self, jobs: Sequence[_UserJob], deadline: float | None) -> list[Any]:
        """One user-encoder call and one index search for a whole batch of Recommend calls."""
        vectors = np.stack([j.vectors for j in jobs])
        masks = np.stack([j.mask for j in jobs])
        t0 = time.perf_counter()
        users = self.backend.encode_users(vectors, masks, _remaining(deadline))
        seconds = time.perf_counter() - t0
        self._time_model(self.user_model, seconds)
        self._time_stage("recommend", "model", seconds, len(jobs))
        results: list[Any] = [None] * len(jobs)
        searched = [b for b, j in enumerate(jobs) if not j.include]
        if searched:
            k = max(jobs[b].k for b in searched)
            t0 = time.perf_counter()
            found = self.catalog.search(users[searched], k, [sorted(jobs[b].exclude) for b in searched])
            seconds = time.perf_counter() - t0
            self._time_index("search", seconds)
            self._time_stage("recommend", "index", seconds, len(searched))
            for hits, b in zip(found, searched, strict=True):
                results[b] = hits[: jobs[b].k]
        for b, job in enumerate(jobs):
            if job.include:
                results[b] = self._rank_among(users[b], job)
        return results

    def _rank_among(self, user: np.ndarray, job: _UserJob) -> Any:
        """Exact inner-product ranking among the filter's include_ids (a small set, so no index search)."""
        keep = [i for i, key in enumerate(job.include) if key not in job.exclude]
        scores = job.include_vectors[keep] @ user if keep else np.zeros(0, dtype=np.float32)
        order = np.argsort(-scores, kind="stable")[: job.k]
        # an item deleted since the call was checked has no item any more: left out, as in a search
        items = self.catalog.items([job.include[keep[i]] for i in order])
        return [(item, float(scores[i])) for i, item in zip(order, items, strict=True) if item is not None]

    # ------------------------------------------------------------------ EmbedItems
    def embed(self, texts: Sequence[str], deadline: float | None = None) -> np.ndarray:
        """Item-space vectors [len(texts), D] of validated texts (one share of a batched item-encoder call)."""
        return self.embed_queue.call(list(texts), deadline)

    def _run_texts(self, jobs: Sequence[list[str]], deadline: float | None) -> list[np.ndarray]:
        texts = [t for job in jobs for t in job]
        t0 = time.perf_counter()
        vectors = self.backend.encode_texts(texts, _remaining(deadline))
        seconds = time.perf_counter() - t0
        self._time_model(self.item_model, seconds)
        self._time_stage("embed", "model", seconds, len(jobs))
        if len(vectors) != len(texts):
            raise GatewayError("INTERNAL", f"the item encoder returned {len(vectors)} vectors for {len(texts)} texts")
        out, start = [], 0
        for job in jobs:
            out.append(vectors[start:start + len(job)])
            start += len(job)
        return out

    # ------------------------------------------------------------------ UpsertItems / DeleteItems / GetItems
    def upsert(self, items: Sequence[NewItem], deadline: float | None = None) -> list[str]:
        """Embed and store validated items; returns their catalogue ids (assigned where none was given)."""
        vectors = self.embed([item.text for item in items], deadline)
        if vectors.shape[1] != self.catalog.dim:
            raise GatewayError("FAILED_PRECONDITION", f"the item encoder gives {vectors.shape[1]}-d vectors but the "
                                                      f"index holds {self.catalog.dim}-d ones: export the item encoder "
                                                      "with the SRS adapter of the deployed user encoder")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) != len(items) or not np.isfinite(vectors).all():  # checked before anything is logged
            raise GatewayError("INTERNAL", "the item encoder returned non-finite vectors or the wrong number of them")
        try:
            ids = self.catalog.upsert([item.id for item in items], vectors,
                                      [(item.title, item.attributes) for item in items])
        except IdsExhausted as error:
            raise GatewayError("FAILED_PRECONDITION", str(error)) from None
        except NotDurable as error:
            raise self._not_durable(error) from None
        self._after_write("upsert", ids)
        return ids

    def delete(self, ids: Sequence[str]) -> tuple[int, list[str]]:
        """Remove items (catalogue ids) from index and store; returns (removed, ids that were not there)."""
        try:
            removed, missing = self.catalog.delete(ids)
        except NotDurable as error:
            raise self._not_durable(error) from None
        self._after_write("delete", list(ids))
        return removed, missing

    def get(self, ids: Sequence[str]) -> tuple[list[Item], list[str]]:
        """Known items (catalogue ids) in the order asked, and the unknown ids."""
        found = self.catalog.items(ids)
        items = [item for item in found if item is not None]
        missing = [key for key, item in zip(ids, found, strict=True) if item is None]
        return items, missing

    @staticmethod
    def _not_durable(error: NotDurable) -> GatewayError:
        logger.error("wal_append_failed", extra={"error": str(error)})
        return GatewayError("UNAVAILABLE", "the write could not be made durable (write-ahead log failure); "
                                           "nothing was changed, retry later")

    def _after_write(self, operation: str, ids: list[str]) -> None:
        size = len(self.catalog)  # one count (a query on Milvus) for the metric and the log
        if self.metrics is not None:
            self.metrics.index_items.set(size)
        logger.info(f"items_{operation}", extra={"count": len(ids), "ids": ids[:MAX_LISTED_IDS], "index_size": size})
        if self.catalog.needs_compaction():
            self._compact_wanted.set()
