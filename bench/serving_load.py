"""The cost of serving: a bounded closed-loop gRPC load on the MovieLens-100k demo deployment vs in-process.

    python bench/serving_load.py [--duration 15] [--concurrency 1 8 32 64] [--clients 4] [--index-backends faiss]
    python bench/serving_load.py --duration 3 --concurrency 1 8 --inproc-concurrency 8 --name serving_load_smoke

Full settings: 14 points x 20 s + start-up, ~6-7 min on a quiet 2-core machine once the deployment exists
(the first run adds the SmolLM2 export, ~3 min quiet).

The deployment is the demo's real models (`make demo` builds them): the
SmolLM2 embedder (runs/demo/embedder/base, bidirectional + mean over the
attribute text) exported *with the item adapter* of the demo's SASRec
(LLM-initialised IDs; the adapter is its calibrated text -> ID map, so
UpsertItems gives a new item the vector the SRS gives a cold item), that
SASRec's user encoder, the python-flavour Triton repository and a Flat
inner-product index over its item table with the ml-100k titles. Everything
lives under runs/bench/deployment/ and is rebuilt only when a sha256 says it
is stale (the checkpoints' hashes recorded in each export.json, every
exported file's hash, the repository's llmrec.json, the index manifest's
item_vectors_sha256): existence alone is never trusted. The
SmolLM2 export takes ~3 min the first time; reuse costs a few seconds of hashing.

Served: a real tritonserver (serving.triton.TritonServer, started here so its
own Prometheus metrics can be read) and the gateway as a separate process
(`python -m serving gateway --config <generated yaml>`), so the clients and the
server never share a GIL. Per point, `--clients` processes (spawn; fewer when
the concurrency is lower) run concurrency/clients threads each; every thread
makes synchronous calls back to back (closed loop) for `--duration` seconds.
Recommend: histories of real ml-100k test users, cut to a random length
(1..--max-history, the most recent items), k=10, exclude_history=true.
UpsertItems: one new item with a synthetic title per call, id assigned by the
gateway. All Recommend points run before any upsert (upserts grow the index);
the gateway runs with persist=false, so the index on disk is never changed and
the upserted items disappear with the gateway.

Item index backends (`--index-backends`, default both): the served points run once per backend, each with a
fresh gateway: `faiss` (the embedded index loaded from the snapshot) and `milvus` (`index_backend: milvus` on
Milvus Lite, the engine in the gateway's process from a file in the run's temporary folder, the collection
created and filled from the same snapshot at start-up; Strong consistency, so an upsert is searchable when it
is acknowledged). The in-process baseline uses FAISS; a third table compares the two backends served at the
same concurrency.

Time split per call, from the gateway's Prometheus metrics read before and
after each point (the clients' warm-up calls happen before the first read,
and every call of the window has finished before the second):
  server      llmrec_gateway_request_seconds (handler entry to return, mean)
  triton      llmrec_gateway_request_stage_seconds_total{stage="model"} / calls: the batched model call as
              each request waited for it (Triton call, gateway side: includes the gateway->Triton HTTP hop)
  index       llmrec_gateway_index_seconds{vectors,upsert} / calls + request_stage{stage="index"} / calls
  gateway     server - triton - index: validation, batching window and queueing, thread hand-offs, response
  network     client mean latency - server mean: gRPC client + server (de)serialisation, HTTP/2, loopback,
              the server's thread-pool queue (grpc_workers), scheduling
Triton's own metrics (nv_inference_*) split the gateway's Triton time further into queue + compute inside
Triton and the gateway->Triton HTTP hop (per Triton request, i.e. per batch).

In-process baseline (same run, side by side, because the machine is noisy):
the same RecommendationPipeline with the onnxruntime backend on the same
repository files and the same index snapshot, in this process, no gRPC:
  direct    one thread, batching window 0 (max_wait_ms=0): the computation alone
  pipeline  the gateway's batching settings, at --inproc-concurrency threads
Ratios = in-process / served (throughput) and served / in-process (latency).

Floors (same run): how far down any gateway could bring the two Recommend ratios on this machine. A gRPC echo
server built like the gateway's, driven by the same clients with Recommend's request bytes at concurrency 1
and 32 (mode grpc-echo), and the in-process direct point with the user encoder on a fresh Triton instead of
onnxruntime (mode inproc-triton: the computation as hosted, no gRPC front), at the same two concurrencies.
Latency floor at one caller = inproc-triton p50 + echo p50; throughput ceiling at 32 callers = the lower of the
echo server's and inproc-triton's calls/s.

Threads (recorded in the result): the repository's onnxruntime models run
with intra_op = --ort-threads (Triton Python backend, one instance per
model), the in-process backend with the same number; FAISS (OpenMP) in the
gateway and here = --faiss-threads (OMP_NUM_THREADS for the gateway and
Triton processes, faiss.omp_set_num_threads here); the gateway's gRPC pool
and batching settings are GatewayConfig's defaults unless given.

Writes bench/results/serving_load.{json,md,png} (use --name for another stem).
The load clients need only grpc and the generated stubs (no torch, no numpy).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, write_result  # noqa: E402
from bench.common import served as demo_served  # noqa: E402

DEPLOYMENT = "runs/bench/deployment"
DATASET = "ml-100k"
K = 10
WARMUP_CALLS = 3  # per client thread, before the metrics are read
CALL_TIMEOUT_S = 60.0
GATEWAY_START_S = 120.0
ECHO_METHOD = "/llmrec.bench.Echo/Echo"  # the floors' gRPC echo server (no gateway work behind it)
FLOOR_LEVELS = (1, 32)  # the concurrencies the Recommend bars are set at
TITLE_WORDS = ("Midnight", "River", "Last", "Summer", "Empire", "Shadow", "Glass", "Garden", "Return", "Silent",
               "City", "Winter", "Secret", "Road", "Star", "Ocean", "Broken", "Crown", "Little", "Wild", "Iron",
               "Paper", "Moon", "Northern", "Lights", "Detective", "Comedy", "Kingdom", "Ghost", "Letters")


# ---------------------------------------------------------------------------------------------- deployment
@dataclass
class Deployment:
    """The folders the load runs on, and which of them this run had to (re)build."""

    root: Path
    embedder: Path  # export with the SRS adapter
    user_encoder: Path
    repository: Path
    index: Path
    srs: Path
    checkpoint: Path
    built: list[str] = field(default_factory=list)


def pick_srs(given: str | None) -> Path:
    """The SRS seed folder: `given`, else the one `make demo` serves (runs/demo/served.json)."""
    return Path(given) if given else ROOT / demo_served("srs")


def _export_ok(folder: Path, checks: dict[str, str]) -> str | None:
    """None when `folder` is an intact export whose export.json has the expected values, else why not."""
    from export.onnx.artifact import read_manifest, verify_files

    if not (folder / "export.json").is_file():
        return "missing"
    manifest = read_manifest(folder)
    for dotted, expected in checks.items():
        value: Any = manifest
        for part in dotted.split("."):
            value = (value or {}).get(part) if isinstance(value, dict) else None
        if value != expected:
            return f"{dotted} is {value!r}, expected {expected!r}"
    bad = verify_files(folder, manifest)
    return f"files changed: {bad}" if bad else None


def _repository_ok(repository: Path, dep: Deployment, threads: int) -> str | None:
    from llmrec.files import sha256_file

    path = repository / "llmrec.json"
    if not path.is_file():
        return "missing"
    manifest = json.loads(path.read_text())
    sources = manifest.get("sources") or {}
    from export.triton.repository import RepositoryOptions

    wanted = asdict(RepositoryOptions(flavour="python", threads=threads))  # the writer's defaults may have changed
    recorded = manifest.get("options") or {}
    changed = sorted(k for k, v in wanted.items() if recorded.get(k) != v)
    if changed:
        return f"options changed: {', '.join(f'{k} {recorded.get(k)!r} -> {wanted[k]!r}' for k in changed)}"
    for key, folder in (("embedder", dep.embedder), ("user_encoder", dep.user_encoder)):
        if (sources.get(key) or {}).get("export_sha256") != sha256_file(folder / "export.json"):
            return f"{key} export changed"
    for rel, digest in (manifest.get("files") or {}).items():
        if not (repository / rel).is_file() or sha256_file(repository / rel) != digest:
            return f"file {rel} changed"
    return None


def _index_ok(index: Path, vectors: Path) -> str | None:
    from llmrec.files import sha256_file

    path = index / "manifest.json"
    if not path.is_file():
        return "missing"
    if json.loads(path.read_text()).get("item_vectors_sha256") != sha256_file(vectors):
        return "built from another item table"
    return None  # the file hashes are verified by ItemIndex.load when the gateway starts


def prepare_deployment(root: Path, checkpoint: Path, srs: Path, ort_threads: int) -> Deployment:
    """Reuse every part whose hashes still match; rebuild the rest (and everything downstream of it)."""
    from export.onnx.artifact import sha256_files

    dep = Deployment(root=root, embedder=root / "item_embedder", user_encoder=root / "user_encoder",
                     repository=root / "model_repository", index=root / "index", srs=srs, checkpoint=checkpoint)
    root.mkdir(parents=True, exist_ok=True)
    srs_names = [n for n in ("config.json", "model.safetensors", "pca.safetensors") if (srs / n).is_file()]
    srs_sha = sha256_files([srs / n for n in srs_names])  # = export.onnx.user_encoder.checkpoint_sha256

    reason = _export_ok(dep.user_encoder, {"source.sha256": srs_sha})
    if reason:
        print(f"  user encoder: {reason}; exporting", flush=True)
        from export.onnx.user_encoder import export_user_encoder

        export_user_encoder(srs, dep.user_encoder)
        dep.built.append("user_encoder")

    from train.stages.common import embedder_hash  # torch is imported here, for the build checks only

    reason = _export_ok(dep.embedder, {"source.sha256": embedder_hash(checkpoint), "adapter.sha256": srs_sha})
    if reason:
        print(f"  item embedder (+ SRS adapter): {reason}; exporting (SmolLM2: ~3 min)", flush=True)
        from export.onnx.embedder import export_embedder

        export_embedder(checkpoint, dep.embedder, adapter=srs)
        dep.built.append("item_embedder")

    reason = _repository_ok(dep.repository, dep, ort_threads)
    if reason:
        print(f"  repository: {reason}; writing", flush=True)
        from export.triton.repository import RepositoryOptions, write_repository

        write_repository(dep.embedder, dep.user_encoder, dep.repository,
                         RepositoryOptions(flavour="python", threads=ort_threads))
        dep.built.append("repository")

    reason = _index_ok(dep.index, dep.user_encoder / "item_vectors.safetensors")
    if reason:
        print(f"  index: {reason}; building", flush=True)
        from export.index import build_index

        build_index(dep.user_encoder, DATASET, dep.index, factory="Flat")
        dep.built.append("index")
    return dep


def sample_histories(n: int, max_history: int, seed: int) -> list[list[str]]:
    """`n` histories of catalogue ids: a random ml-100k test user's history, its most recent 1..max_history
    items."""
    from train.data import load_dataset

    data = load_dataset(DATASET)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        full = data.test.history(rng.randrange(len(data.test))).tolist()
        length = rng.randint(1, min(len(full), max_history))
        out.append([str(data.item_ids[int(i)]) for i in full[-length:]])
    return out


def synthetic_title(rng: random.Random) -> str:
    words = rng.sample(TITLE_WORDS, rng.randint(1, 4))
    return f"{' '.join(words)} ({rng.randint(1930, 2030)})"


# ---------------------------------------------------------------------------------------------- load clients
def client_process(spec_path: str, client: int, ready: Any, go: Any) -> None:
    """One load-client process: `threads` closed loops on one channel; writes its latencies as JSON.

    Only grpc and the generated stubs are imported (spawned interpreter: nothing inherited)."""
    import grpc

    sys.path.insert(0, str(ROOT))
    from serving.proto.llmrec.v2 import recommend_pb2 as pb
    from serving.proto.llmrec.v2 import recommend_pb2_grpc as pb_grpc

    spec = json.loads(Path(spec_path).read_text())
    threads = spec["threads"][client]
    channel = grpc.insecure_channel(spec["address"])
    stub = pb_grpc.RecommenderStub(channel)
    rng = random.Random(spec["seed"] * 1000 + client)
    results: list[dict[str, Any]] = [{} for _ in range(threads)]

    def requests(thread: int) -> tuple[Any, list[Any]]:
        if spec["method"] in ("Recommend", "Echo"):
            histories = spec["histories"]
            start = (client * 97 + thread * 13) % len(histories)
            picked = [histories[(start + j) % len(histories)] for j in range(len(histories))]
            reqs = [pb.RecommendRequest(history=h, k=spec["k"], exclude_history=True) for h in picked]
            if spec["method"] == "Echo":  # the same request bytes to a server that only sends them back
                return channel.unary_unary(ECHO_METHOD, request_serializer=pb.RecommendRequest.SerializeToString,
                                           response_deserializer=pb.RecommendRequest.FromString), reqs
            return stub.Recommend, reqs
        titles = [synthetic_title(rng) for _ in range(512)]
        return stub.UpsertItems, [pb.UpsertItemsRequest(items=[pb.ItemUpsert(title=t)]) for t in titles]

    def loop(thread: int, call: Any, reqs: list[Any], barrier: threading.Barrier) -> None:
        for j in range(WARMUP_CALLS):
            try:
                call(reqs[j % len(reqs)], timeout=CALL_TIMEOUT_S)
            except grpc.RpcError:  # a refused or late warm-up call warms as well; the timed window counts errors
                pass
        barrier.wait()  # all threads warm: tell the parent, then wait for the start signal
        go.wait()
        latencies: list[float] = []
        errors: dict[str, int] = {}
        start = time.monotonic()
        end = start + spec["duration"]
        j = WARMUP_CALLS
        last = start
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                call(reqs[j % len(reqs)], timeout=CALL_TIMEOUT_S)
                latencies.append(time.perf_counter() - t0)
            except grpc.RpcError as error:
                errors[error.code().name] = errors.get(error.code().name, 0) + 1
            j += 1
            last = time.monotonic()
        results[thread] = {"latencies": latencies, "errors": errors, "start": start, "end": last}

    barrier = threading.Barrier(threads + 1)
    workers = []
    for t in range(threads):
        call, reqs = requests(t)
        workers.append(threading.Thread(target=loop, args=(t, call, reqs, barrier), daemon=True))
        workers[-1].start()
    barrier.wait()
    ready.put(client)
    for worker in workers:
        worker.join()
    channel.close()
    Path(spec["out"]).joinpath(f"client-{client}.json").write_text(json.dumps(results))


def echo_server(workers: int, max_concurrent: int, port: Any, stop: Any) -> None:
    """A gRPC server that answers every call with its request bytes, built like the gateway's (a thread pool of
    `workers`, the same admission limit): what one served call costs here before the gateway does anything."""
    from concurrent import futures

    import grpc

    def echo(request: bytes, context: Any) -> bytes:
        return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), maximum_concurrent_rpcs=max_concurrent,
                         options=[("grpc.so_reuseport", 0)])
    service, method = ECHO_METHOD.strip("/").split("/")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {
        method: grpc.unary_unary_rpc_method_handler(echo)}),))
    port.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    stop.wait()
    server.stop(grace=1).wait()


# ---------------------------------------------------------------------------------------------- metrics
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of a Prometheus endpoint as {(name, sorted labels): value}."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8")
    return parse_samples(text)


def parse_samples(text: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """Sum of after - before over the samples named `name` whose labels include `labels`."""
    total = 0.0
    for (sample, sample_labels), value in after.items():
        if sample != name:
            continue
        found = dict(sample_labels)
        if all(found.get(k) == v for k, v in labels.items()):
            total += value - before.get((sample, sample_labels), 0.0)
    return total


def server_split(before: Samples, after: Samples, method: str) -> dict[str, float]:
    """Mean per-call server, Triton and index time (ms) of `method` over the window, from the gateway's metrics."""
    calls = delta(before, after, "llmrec_gateway_request_seconds_count", method=method)
    if calls <= 0:
        return {"server_calls": 0}
    queue = "recommend" if method == "Recommend" else "embed"
    server = delta(before, after, "llmrec_gateway_request_seconds_sum", method=method)
    model = delta(before, after, "llmrec_gateway_request_stage_seconds_total", queue=queue, stage="model")
    if method == "Recommend":
        index = (delta(before, after, "llmrec_gateway_index_seconds_sum", operation="vectors")
                 + delta(before, after, "llmrec_gateway_request_stage_seconds_total", queue=queue, stage="index"))
    else:
        index = delta(before, after, "llmrec_gateway_index_seconds_sum", operation="upsert")
    batches = delta(before, after, "llmrec_gateway_batch_size_count", queue=queue)
    batched = delta(before, after, "llmrec_gateway_batch_size_sum", queue=queue)
    wait = delta(before, after, "llmrec_gateway_batch_wait_seconds_sum", queue=queue)
    ok = delta(before, after, "llmrec_gateway_requests_total", method=method, code="OK")
    return {"server_calls": int(calls), "server_ok": int(ok), "server_ms": 1e3 * server / calls,
            "triton_ms": 1e3 * model / calls, "index_ms": 1e3 * index / calls,
            "gateway_ms": 1e3 * (server - model - index) / calls,
            "batches": int(batches), "mean_batch": batched / batches if batches else 0.0,
            "oldest_wait_ms": 1e3 * wait / batches if batches else 0.0}


TRITON_STATS = ("request_success", "exec_count", "request_duration_us", "queue_duration_us",
                "compute_input_duration_us", "compute_infer_duration_us", "compute_output_duration_us")


def triton_split(before: Samples, after: Samples, models: list[str]) -> dict[str, dict[str, float]]:
    """Per model inside Triton: requests, executions, and mean request / queue / compute time per request (ms)."""
    out = {}
    for model in models:
        # Triton's counters have no _total suffix; prometheus_client's parser adds one: accept both spellings
        d = {s: delta(before, after, f"nv_inference_{s}_total", model=model)
             + delta(before, after, f"nv_inference_{s}", model=model) for s in TRITON_STATS}
        n = d["request_success"]
        if n <= 0:
            continue
        # (nv_inference_count stays 0 for these Python-backend models, so rows per request come from the
        # gateway's batch_size histogram instead: `mean_batch` of the row)
        out[model] = {"requests": int(n), "executions": int(d["exec_count"]),
                      "request_ms": d["request_duration_us"] / n / 1e3, "queue_ms": d["queue_duration_us"] / n / 1e3,
                      "compute_ms": (d["compute_input_duration_us"] + d["compute_infer_duration_us"]
                                     + d["compute_output_duration_us"]) / n / 1e3}
    return out


# ---------------------------------------------------------------------------------------------- statistics
def summarise(latencies: list[float], errors: dict[str, int], wall: float) -> dict[str, Any]:
    import numpy as np

    if not latencies:
        return {"calls": 0, "errors": errors, "seconds": round(wall, 3)}
    ms = np.asarray(latencies) * 1e3
    return {"calls": len(latencies), "errors": errors, "seconds": round(wall, 3),
            "throughput": len(latencies) / wall if wall > 0 else 0.0,
            "mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max())}


def rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


# ---------------------------------------------------------------------------------------------- served runs
class Served:
    """Triton + the gateway subprocess; both stopped by `stop()` (by the handles this class holds)."""

    def __init__(self, dep: Deployment, workdir: Path, faiss_threads: int, gateway_overrides: dict[str, Any],
                 index_backend: str = "faiss") -> None:
        self.dep = dep
        self.index_backend = index_backend
        self.workdir = workdir
        self.faiss_threads = faiss_threads
        self.overrides = gateway_overrides
        self.triton: Any = None
        self.gateway: subprocess.Popen[str] | None = None
        self.address = ""
        self.metrics_url = ""
        self.config: dict[str, Any] = {}

    def start(self) -> None:
        from serving.triton import TritonServer

        os.environ["OMP_NUM_THREADS"] = str(self.faiss_threads)  # Triton's Python stubs inherit it (set in main too)
        self.triton = TritonServer(self.dep.repository)
        t0 = time.perf_counter()
        self.triton.start()
        print(f"  triton ready in {time.perf_counter() - t0:.1f} s (pid {self.triton.pid}, {self.triton.grpc_url})",
              flush=True)
        self.config = {"port": 0, "metrics_port": 0, "backend": "triton", "persist": False,
                       "model_repository": str(self.dep.repository.resolve()), "index": str(self.dep.index.resolve()),
                       "triton": {"url": self.triton.http_url}, "index_backend": self.index_backend,
                       **self.overrides}
        if self.index_backend == "milvus":  # a fresh Milvus Lite file, filled from the snapshot by the gateway
            self.config["milvus"] = {"uri": str(self.workdir / "milvus.db"), "collection": "serving_load"}
        config_path = self.workdir / "gateway.yaml"
        config_path.write_text(json.dumps(self.config, indent=2) + "\n")  # JSON is YAML
        log = (self.workdir / "gateway.log").open("w")
        env = dict(os.environ, OMP_NUM_THREADS=str(self.faiss_threads), PYTHONPATH=str(ROOT))
        self.gateway = subprocess.Popen([sys.executable, "-m", "serving", "gateway", "--config", str(config_path),
                                         "--quiet"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        line = self._ready_line()
        self.address = line["address"]
        self.metrics_url = f"http://127.0.0.1:{line['metrics_port']}/metrics"
        print(f"  gateway ready (pid {self.gateway.pid}, {self.address}, serving={line['serving']})", flush=True)

    def _ready_line(self) -> dict[str, Any]:
        assert self.gateway is not None and self.gateway.stdout is not None
        found: dict[str, Any] = {}

        def read() -> None:
            for raw in self.gateway.stdout:
                if raw.startswith("{") and '"gateway_ready"' in raw:
                    found.update(json.loads(raw))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(GATEWAY_START_S)
        if not found:
            tail = (self.workdir / "gateway.log").read_text()[-3000:]
            raise RuntimeError(f"the gateway did not become ready (exit code {self.gateway.poll()}):\n{tail}")
        return found

    def stop(self) -> None:
        if self.gateway is not None:
            if self.gateway.poll() is None:
                self.gateway.send_signal(signal.SIGTERM)
                try:
                    self.gateway.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.gateway.kill()
                    self.gateway.wait(timeout=10)
            self.gateway = None
        if self.triton is not None:
            self.triton.stop()
            self.triton = None


def drive_clients(address: str, method: str, concurrency: int, clients: int, duration: float,
                  histories: list[list[str]], seed: int, workdir: Path,
                  window: Callable[[str], None] = lambda moment: None) -> dict[str, Any]:
    """One closed-loop point: client processes against `address`; `window("start")` / `window("end")` run just
    before the timed window opens and after every call of it has finished (metrics reads)."""
    procs_n = max(1, min(clients, concurrency))
    threads = [concurrency // procs_n + (1 if i < concurrency % procs_n else 0) for i in range(procs_n)]
    out = Path(tempfile.mkdtemp(prefix=f"{method}-{concurrency}-", dir=workdir))
    spec = {"address": address, "method": method, "threads": threads, "duration": duration, "k": K,
            "seed": seed, "histories": histories, "out": str(out)}
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec))
    ctx = mp.get_context("spawn")
    ready, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=client_process, args=(str(spec_path), c, ready, go), daemon=True)
             for c in range(procs_n)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=180)
        window("start")
        go.set()
        for p in procs:
            p.join(timeout=duration + 3 * CALL_TIMEOUT_S)
        window("end")
    finally:
        for p in procs:  # only our own client processes, by handle
            if p.is_alive():
                p.terminate()
                p.join(5)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    starts, ends = [], []
    for c in range(procs_n):
        path = out / f"client-{c}.json"
        if not path.is_file():
            raise RuntimeError(f"load client {c} wrote no result (exit code {procs[c].exitcode})")
        for thread in json.loads(path.read_text()):
            latencies += thread["latencies"]
            for code, n in thread["errors"].items():
                errors[code] = errors.get(code, 0) + n
            starts.append(thread["start"])
            ends.append(thread["end"])
    shutil.rmtree(out, ignore_errors=True)
    return {"method": method, "concurrency": concurrency, "client_processes": procs_n,
            **summarise(latencies, errors, max(ends) - min(starts))}


def run_served_point(served: Served, method: str, concurrency: int, clients: int, duration: float,
                     histories: list[list[str]], seed: int, workdir: Path) -> dict[str, Any]:
    """One closed-loop point over gRPC against the gateway, its and Triton's metrics read around the window."""
    reads: dict[str, tuple[Samples, Samples]] = {}

    def window(moment: str) -> None:
        reads[moment] = scrape(served.metrics_url), scrape(served.triton.metrics_url)

    point = drive_clients(served.address, method, concurrency, clients, duration, histories, seed, workdir, window)
    (before, triton_before), (after, triton_after) = reads["start"], reads["end"]
    row = {"mode": "grpc", "index_backend": served.index_backend, **point}
    row.update(server_split(before, after, method))
    if row.get("calls"):
        row["network_ms"] = row["mean_ms"] - row.get("server_ms", 0.0)
    models = ["user_encoder"] if method == "Recommend" else ["item_encoder", "tokenizer", "item_embedder"]
    row["triton_inside"] = {m: rounded(v) for m, v in triton_split(triton_before, triton_after, models).items()}
    return row


def run_echo_points(levels: list[int], clients: int, duration: float, histories: list[list[str]], seed: int,
                    workdir: Path, workers: int, max_concurrent: int) -> list[dict[str, Any]]:
    """The gRPC floor: Recommend's request bytes echoed by a server built like the gateway's, same clients."""
    ctx = mp.get_context("spawn")
    port, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=echo_server, args=(workers, max_concurrent, port, stop), daemon=True)
    server.start()
    rows = []
    try:
        address = f"127.0.0.1:{port.get(timeout=60)}"
        for c in levels:
            rows.append({"mode": "grpc-echo", "index_backend": "", **drive_clients(
                address, "Echo", c, clients, duration, histories, seed, workdir)})
            print_row(rows[-1])
    finally:
        stop.set()
        server.join(10)
        if server.is_alive():
            server.terminate()
    return rows


def run_triton_inproc_points(dep: Deployment, levels: list[int], duration: float, histories: list[list[str]],
                             seed: int, batching: Any, ort_threads: int) -> list[dict[str, Any]]:
    """Recommend through the gateway's pipeline in this process with the models on Triton (the gateway's adapter,
    a fresh tritonserver), at each of `levels` callers: the in-process rows plus what hosting the user encoder
    in Triton costs, in place (a Triton called back to back answers faster than one called between other work,
    whose threads went idle in between), without the gRPC front. One caller: no batching window, as direct."""
    from serving.gateway.config import BatchingConfig
    from serving.triton import TritonServer

    triton = TritonServer(dep.repository).start()
    rows = []
    try:
        for c in levels:
            rows.append(run_inproc_point(dep, "Recommend", c, duration, histories, seed,
                                         BatchingConfig(max_wait_ms=0.0, workers=1) if c == 1 else batching,
                                         ort_threads, "inproc-triton", triton_url=triton.http_url))
            print_row(rows[-1])
    finally:
        triton.stop()
    return rows


# ---------------------------------------------------------------------------------------------- in-process
def run_inproc_point(dep: Deployment, method: str, concurrency: int, duration: float, histories: list[list[str]],
                     seed: int, batching: Any, ort_threads: int, label: str,
                     triton_url: str | None = None) -> dict[str, Any]:
    """The gateway's pipeline in this process (fresh index load), `concurrency` threads; the models in
    onnxruntime here, or on the Triton at `triton_url` (the gateway's adapter)."""
    from llmrec.manifests import RepositoryManifest
    from serving.gateway.backends import OnnxRuntimeBackend, item_text_of
    from serving.gateway.config import LimitsConfig
    from serving.gateway.metrics import GatewayMetrics
    from serving.gateway.pipeline import NewItem, RecommendationPipeline
    from serving.gateway.server import load_catalog
    from serving.gateway.service import check_new_items, check_recommend
    from serving.gateway.triton_client import TritonBackend
    from serving.index.catalog import Catalog

    index, store, _ = load_catalog(dep.index)
    backend = (TritonBackend(triton_url) if triton_url else OnnxRuntimeBackend(dep.repository, threads=ort_threads))
    metrics = GatewayMetrics()
    manifest = RepositoryManifest.read(dep.repository)  # what the gateway reads: max_len, the item-text recipe
    recipe = item_text_of(manifest)
    pipeline = RecommendationPipeline(backend, Catalog(index, store), max_len=manifest.user_encoder.max_len,
                                      batching=batching, metrics=metrics).start()
    limits = LimitsConfig()
    go = threading.Event()
    barrier = threading.Barrier(concurrency + 1)
    results: list[dict[str, Any]] = [{} for _ in range(concurrency)]

    def one_call(j: int, rng: random.Random) -> None:
        if method == "Recommend":
            history = histories[j % len(histories)]
            pipeline.recommend(check_recommend(history, K, True, (), (), limits))
        else:
            title = synthetic_title(rng)
            pipeline.upsert(check_new_items([NewItem(id="", title=title, text="")], limits, recipe))  # as served

    def loop(thread: int) -> None:
        rng = random.Random(seed * 1000 + 500 + thread)
        j = thread * 13
        for _ in range(WARMUP_CALLS):
            one_call(j, rng)
            j += 1
        barrier.wait()
        go.wait()
        latencies: list[float] = []
        start = time.monotonic()
        end = start + duration
        last = start
        while time.monotonic() < end:
            t0 = time.perf_counter()
            one_call(j, rng)
            latencies.append(time.perf_counter() - t0)
            j += 1
            last = time.monotonic()
        results[thread] = {"latencies": latencies, "start": start, "end": last}

    workers = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(concurrency)]
    try:
        for w in workers:
            w.start()
        barrier.wait()
        before = parse_samples(metrics.text())
        go.set()
        for w in workers:
            w.join()
        after = parse_samples(metrics.text())
    finally:
        pipeline.stop()
        backend.close()
    latencies = [x for r in results for x in r.get("latencies", [])]
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    row = {"mode": label, "index_backend": "faiss", "method": method, "concurrency": concurrency,
           **summarise(latencies, {}, wall)}
    split = split_inproc(before, after, method, len(latencies))
    row.update(split)
    return row


def split_inproc(before: Samples, after: Samples, method: str, calls: int) -> dict[str, float]:
    """Model and index time per call in process (no request_seconds there: the call latency is the total)."""
    if not calls:
        return {}
    queue = "recommend" if method == "Recommend" else "embed"
    model = delta(before, after, "llmrec_gateway_request_stage_seconds_total", queue=queue, stage="model")
    if method == "Recommend":
        index = (delta(before, after, "llmrec_gateway_index_seconds_sum", operation="vectors")
                 + delta(before, after, "llmrec_gateway_request_stage_seconds_total", queue=queue, stage="index"))
    else:
        index = delta(before, after, "llmrec_gateway_index_seconds_sum", operation="upsert")
    batches = delta(before, after, "llmrec_gateway_batch_size_count", queue=queue)
    batched = delta(before, after, "llmrec_gateway_batch_size_sum", queue=queue)
    return {"triton_ms": 1e3 * model / calls, "index_ms": 1e3 * index / calls,
            "batches": int(batches), "mean_batch": batched / batches if batches else 0.0}


# ---------------------------------------------------------------------------------------------- report
def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Served vs in-process, per method: throughput in-process / served, p50 served / in-process."""
    out = []
    for method in ("Recommend", "UpsertItems"):
        direct = next((r for r in rows if r["mode"] == "inproc-direct" and r["method"] == method), None)
        inproc = {r["concurrency"]: r for r in rows if r["mode"] == "inproc-pipeline" and r["method"] == method}
        for r in rows:
            if r["mode"] != "grpc" or r["method"] != method or not r.get("calls"):
                continue
            ref = inproc.get(r["concurrency"])
            entry = {"method": method, "index_backend": r["index_backend"],
                     "concurrency": r["concurrency"]}
            if direct and direct.get("calls"):
                entry["vs_direct_throughput"] = direct["throughput"] / r["throughput"]
                entry["vs_direct_p50"] = r["p50_ms"] / direct["p50_ms"]
            if ref and ref.get("calls"):
                entry["vs_pipeline_throughput"] = ref["throughput"] / r["throughput"]
                entry["vs_pipeline_p50"] = r["p50_ms"] / ref["p50_ms"]
            out.append(rounded(entry))
    return out


def backend_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Milvus served vs FAISS served at the same method and concurrency: throughput FAISS / Milvus, p50 Milvus /
    FAISS (above 1: Milvus is slower)."""
    served = {(r["method"], r["concurrency"], r["index_backend"]): r for r in rows
              if r["mode"] == "grpc" and r.get("calls")}
    out = []
    for (method, concurrency, backend), milvus in served.items():
        faiss = served.get((method, concurrency, "faiss"))
        if backend == "milvus" and faiss is not None:
            out.append(rounded({"method": method, "concurrency": concurrency,
                                "throughput_faiss_over_milvus": faiss["throughput"] / milvus["throughput"],
                                "p50_milvus_over_faiss": milvus["p50_ms"] / faiss["p50_ms"],
                                "index_ms_faiss": faiss.get("index_ms"), "index_ms_milvus": milvus.get("index_ms")}))
    return out


def floors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What no gateway code can go below here, from this run's own rows: at one caller, served p50 >= the
    pipeline's p50 with its models on Triton in process (inproc-triton) + the gRPC echo p50; at c callers, served
    calls/s <= the lower of the echo server's calls/s (same clients) and the pipeline's on Triton in process.
    Each next to the bar it bounds."""
    by_mode = {(r["mode"], r["concurrency"]): r for r in rows if r["method"] in ("Recommend", "Echo")
               and r.get("calls") and r["mode"] != "grpc"}
    out = []
    direct, echo1, hosted = (by_mode.get((mode, 1)) for mode in ("inproc-direct", "grpc-echo", "inproc-triton"))
    if direct and echo1 and hosted:
        floor = hosted["p50_ms"] + echo1["p50_ms"]
        out.append(rounded({"bar": "Recommend p50 at 1 caller <= 2.5x in-process direct", "concurrency": 1,
                            "floor": floor, "floor_ratio": floor / direct["p50_ms"], "bar_value": 2.5,
                            "parts": {"direct_p50_ms": direct["p50_ms"], "on_triton_p50_ms": hosted["p50_ms"],
                                      "echo_p50_ms": echo1["p50_ms"]}}))
    for (mode, c), echo in sorted(by_mode.items()):
        pipeline, hosted = by_mode.get(("inproc-pipeline", c)), by_mode.get(("inproc-triton", c))
        if mode == "grpc-echo" and c > 1 and pipeline and hosted:
            ceiling = min(echo["throughput"], hosted["throughput"])
            out.append(rounded({"bar": f"Recommend calls/s at {c} callers >= 0.7x in-process pipeline",
                                "concurrency": c, "floor": ceiling, "floor_ratio": ceiling / pipeline["throughput"],
                                "bar_value": 0.7,
                                "parts": {"echo_calls_per_s": echo["throughput"],
                                          "on_triton_calls_per_s": hosted["throughput"],
                                          "pipeline_calls_per_s": pipeline["throughput"]}}))
    return out


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(payload: dict[str, Any]) -> str:
    s = payload["settings"]
    rows, ratio_rows = payload["rows"], payload["ratios"]
    load = s["load_average_at_start"]
    lines = [
        "# Serving load: gRPC gateway + Triton vs the same pipeline in-process (MovieLens-100k demo models)",
        "",
        f"Models: item encoder = `{s['embedder_checkpoint']}` + adapter of `{s['srs']}` (SmolLM2-135M, "
        f"{s['item_dim']}-d SRS item space); user encoder = that SASRec (max_len {s['max_len']}); Flat "
        f"inner-product index, {s['index_items']:,} items. Closed loop, {s['duration_s']:.0f} s per point, "
        f"up to {s['clients']} client processes; Recommend: real test-user histories cut to 1..{s['max_history']} "
        f"items, k={K}, exclude_history; UpsertItems: one synthetic title per call. Threads: onnxruntime "
        f"intra-op {s['ort_threads']} (Triton models and in-process), FAISS {s['faiss_threads']}, gateway gRPC "
        f"workers {s['gateway']['grpc_workers']}, batching max {s['gateway']['batching']['max_batch_size']} / "
        f"{s['gateway']['batching']['max_wait_ms']} ms / {s['gateway']['batching']['workers']} workers; Triton "
        f"dynamic batcher {s['triton_repository']['max_queue_delay_us']} us. {s['cores']} cores, load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at start (other jobs shared the machine: compare rows of "
        f"this run, not absolute numbers across runs). Total {payload['seconds']:.0f} s.",
        "",
        "Latency in ms (client side). Split per call (means, ms): server = gateway handler; triton = batched model "
        "call as each request waited for it; index = item-vector lookup + search (or upsert); gateway = server - "
        "triton - index (validation, batching window, queues, response); network = client mean - server "
        "(gRPC + loopback + the server's thread pool queue). In-process rows have no server/network.",
        "",
        "| mode | index | method | conc. | calls | calls/s | p50 | p95 | p99 | mean | server | triton | index | "
        "gateway | network | batch | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        errors = ", ".join(f"{k} {v}" for k, v in (r.get("errors") or {}).items()) or r.get("failed", "")
        lines.append(
            f"| {r['mode']} | {r['index_backend']} | {r['method']} | {r['concurrency']} | "
            f"{fmt(r.get('calls'))} | "
            f"{fmt(r.get('throughput'))} | {fmt(r.get('p50_ms'), 2)} | {fmt(r.get('p95_ms'), 2)} | "
            f"{fmt(r.get('p99_ms'), 2)} | {fmt(r.get('mean_ms'), 2)} | {fmt(r.get('server_ms'), 2)} | "
            f"{fmt(r.get('triton_ms'), 2)} | {fmt(r.get('index_ms'), 3)} | {fmt(r.get('gateway_ms'), 2)} | "
            f"{fmt(r.get('network_ms'), 2)} | {fmt(r.get('mean_batch'))} | {errors} |")
    lines += ["", "Inside Triton (per Triton request = one gateway batch; ms): the gateway's Triton time minus "
                  "Triton's request time is the gateway->Triton HTTP hop.", "",
              "| index | method | conc. | model | requests | executions | request | queue | compute |",
              "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        for model, t in (r.get("triton_inside") or {}).items():
            lines.append(f"| {r['index_backend']} | {r['method']} | {r['concurrency']} | {model} | "
                         f"{t['requests']:,} | "
                         f"{t['executions']:,} | {t['request_ms']:.2f} | {t['queue_ms']:.2f} | "
                         f"{t['compute_ms']:.2f} |")
    lines += ["", "Cost of serving (same run): throughput ratio = in-process / gRPC; p50 ratio = gRPC / in-process. "
                  "direct = one thread, no batching window; pipeline = the gateway's batching at the same "
                  "concurrency in one process.", "",
              "| served index | method | conc. | throughput vs direct | p50 vs direct | throughput vs pipeline | "
              "p50 vs pipeline |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for e in ratio_rows:
        lines.append(f"| {e['index_backend']} | {e['method']} | {e['concurrency']} | "
                     f"{fmt(e.get('vs_direct_throughput'), 2)} | "
                     f"{fmt(e.get('vs_direct_p50'), 2)} | {fmt(e.get('vs_pipeline_throughput'), 2)} | "
                     f"{fmt(e.get('vs_pipeline_p50'), 2)} |")
    if payload.get("floors"):
        lines += ["", "Floors (same run): grpc-echo rows are a gRPC server built like the gateway's (same thread "
                      "pool and admission limit) that sends Recommend's request bytes back, driven by the same "
                      "clients: any served call pays at least that. inproc-triton is the in-process direct row "
                      "with the user encoder on Triton (the gateway's HTTP adapter, a fresh tritonserver): the "
                      "Recommend computation as hosted, without the gRPC front. Latency floor = inproc-triton p50 "
                      "+ echo p50; throughput ceiling = the lower of echo and inproc-triton calls/s.", "",
                  "| bar | floor or ceiling | as a ratio | bar's ratio |", "|---|---:|---:|---:|"]
        for f in payload["floors"]:
            unit = "ms" if f["concurrency"] == 1 else "calls/s"
            lines.append(f"| {f['bar']} | {fmt(f['floor'], 2)} {unit} | {fmt(f['floor_ratio'], 2)}x | "
                         f"{f['bar_value']}x |")
    if payload.get("backend_ratios"):
        lines += ["", "Milvus vs FAISS behind the same gateway and Triton (same run): throughput FAISS / Milvus, "
                      "p50 Milvus / FAISS (above 1: Milvus is slower); index = ms per call in the item index "
                      "(vector lookup + search, or the upsert).", "",
                  "| method | conc. | throughput FAISS / Milvus | p50 Milvus / FAISS | index ms FAISS | "
                  "index ms Milvus |", "|---|---:|---:|---:|---:|---:|"]
        for e in payload["backend_ratios"]:
            lines.append(f"| {e['method']} | {e['concurrency']} | {fmt(e['throughput_faiss_over_milvus'], 2)} | "
                         f"{fmt(e['p50_milvus_over_faiss'], 2)} | {fmt(e.get('index_ms_faiss'), 3)} | "
                         f"{fmt(e.get('index_ms_milvus'), 3)} |")
    return "\n".join(lines) + "\n"


def served_rows(rows: list[dict[str, Any]], method: str, backend: str) -> list[dict[str, Any]]:
    """The gRPC rows of one method and index backend that made calls, by concurrency."""
    return sorted((r for r in rows if r["mode"] == "grpc" and r["method"] == method and r.get("calls")
                   and r["index_backend"] == backend), key=lambda r: r["concurrency"])


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    methods = [m for m in ("Recommend", "UpsertItems") if any(r["method"] == m and r.get("calls") for r in rows)]
    if not methods:
        return False
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods), 4.2), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        for backend in sorted({r["index_backend"] for r in rows if r["mode"] == "grpc"}):
            served = served_rows(rows, method, backend)
            for key, style in (("p50_ms", "o-"), ("p95_ms", "s--")):
                ax.plot([r["concurrency"] for r in served], [r[key] for r in served], style,
                        label=f"gRPC {backend} {key[:3]}")
        for r in rows:
            if r["method"] == method and r["mode"].startswith("inproc") and r.get("calls"):
                marker = "x" if r["mode"] == "inproc-direct" else "D"
                ax.scatter([r["concurrency"]], [r["p50_ms"]], marker=marker, color="black", zorder=3,
                           label=f"{r['mode']} p50 (c={r['concurrency']})")
            if method == "Recommend" and r["mode"] == "grpc-echo" and r.get("calls"):
                ax.scatter([r["concurrency"]], [r["p50_ms"]], marker="+", s=80, color="tab:red", zorder=3,
                           label=f"gRPC echo p50 (c={r['concurrency']}, floor)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent calls (closed loop)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(method)
        ax.grid(True, which="both", alpha=0.3)
        ax2 = ax.twinx()
        faiss_served = served_rows(rows, method, "faiss")
        ax2.plot([r["concurrency"] for r in faiss_served], [r["throughput"] for r in faiss_served], color="grey",
                 alpha=0.6, label="gRPC (FAISS) calls/s")
        ax2.set_ylabel("calls/s (grey)")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load per point")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64], help="concurrent calls (gRPC)")
    p.add_argument("--clients", type=int, default=4, help="client processes at most (threads split among them)")
    p.add_argument("--inproc-concurrency", type=int, nargs="*", default=[1, 32],
                   help="thread counts of the in-process pipeline baseline (with batching); the direct "
                        "single-thread baseline always runs")
    p.add_argument("--upsert-concurrency", type=int, nargs="+", default=None,
                   help="concurrent UpsertItems calls (default: --concurrency)")
    p.add_argument("--index-backends", nargs="+", default=["faiss", "milvus"], choices=["faiss", "milvus"],
                   help="item index backends of the served points (milvus: Milvus Lite in the gateway)")
    p.add_argument("--methods", nargs="+", default=["Recommend", "UpsertItems"], choices=["Recommend", "UpsertItems"])
    p.add_argument("--max-history", type=int, default=100, help="longest sampled history (the encoder reads 50)")
    p.add_argument("--ort-threads", type=int, default=1, help="onnxruntime intra-op threads per model")
    p.add_argument("--faiss-threads", type=int, default=1, help="FAISS OpenMP threads (gateway and in-process)")
    p.add_argument("--grpc-workers", type=int, default=None, help="gateway grpc_workers (default: GatewayConfig's)")
    p.add_argument("--embedder", default=None, help="embedder checkpoint (default: the one `make demo` serves)")
    p.add_argument("--srs", default=None, help="SRS seed folder (default: the one `make demo` serves)")
    p.add_argument("--deployment", default=DEPLOYMENT, help="folder of the exports, repository and index")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--name", default="serving_load", help="result file stem under bench/results/")
    args = p.parse_args(argv)
    if args.duration <= 0 or any(c < 1 for c in args.concurrency + args.inproc_concurrency) or args.clients < 1:
        p.error("--duration, --concurrency, --inproc-concurrency and --clients must be positive")
    return args


def shown_path(path: Path) -> str:
    """Relative to the project when inside it (results read the same on every clone), else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Before torch or faiss load their OpenMP runtime: faiss.omp_set_num_threads only sets the calling thread's
    # value, while the pipeline's batch workers (other threads) read this default (the smoke run measured
    # 45 ms per in-process index call with the default of 2 threads on a busy machine, 1 ms with 1)
    os.environ["OMP_NUM_THREADS"] = str(args.faiss_threads)
    t_start = time.perf_counter()
    load = os.getloadavg()
    served_levels = {"Recommend": args.concurrency, "UpsertItems": args.upsert_concurrency or args.concurrency}
    # the floors (echo points and the pipeline on Triton in process) at the Recommend bars' concurrencies
    floor_levels = [c for c in args.concurrency if c in FLOOR_LEVELS] if "Recommend" in args.methods else []
    points = sum(len(args.index_backends) * len(served_levels[m]) + 1 + len(args.inproc_concurrency)
                 for m in args.methods) + 2 * len(floor_levels)
    print(f"serving load: {points} points x {args.duration:.0f} s (+ start-up)", flush=True)

    print("deployment", flush=True)
    checkpoint, srs = ROOT / (args.embedder or demo_served("embedder")), pick_srs(args.srs)
    dep = prepare_deployment(ROOT / args.deployment, checkpoint, srs, args.ort_threads)
    print(f"  {dep.root} ({'built: ' + ', '.join(dep.built) if dep.built else 'reused: every hash matched'})",
          flush=True)
    histories = sample_histories(2000, args.max_history, args.seed)

    import faiss

    from serving.gateway.config import BatchingConfig, GatewayConfig

    faiss.omp_set_num_threads(args.faiss_threads)
    overrides: dict[str, Any] = {}
    if args.grpc_workers is not None:
        overrides["grpc_workers"] = args.grpc_workers
    gateway_defaults = GatewayConfig(**{k: v for k, v in overrides.items()})
    rows: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="llmrec-serving-load-"))
    gateway_logs, configs = {}, {}
    for backend in args.index_backends:  # a fresh gateway each: the upserts of one never reach the other
        served = Served(dep, workdir, args.faiss_threads, overrides, index_backend=backend)
        try:
            served.start()
            for method in args.methods:  # Recommend first: upserts grow the index
                for c in served_levels[method]:
                    try:
                        row = run_served_point(served, method, c, args.clients, args.duration, histories,
                                               args.seed, workdir)
                    except Exception as error:  # one point that cannot run is reported, the others still are
                        row = {"mode": "grpc", "index_backend": backend, "method": method, "concurrency": c,
                               "failed": f"{type(error).__name__}: {error}"[:300]}
                    rows.append(row)
                    print_row(row)
            gateway_logs[backend] = (workdir / "gateway.log").read_text()[-4000:]
            configs[backend] = served.config
        finally:
            served.stop()
    if floor_levels:
        print("floors: gRPC echo, the pipeline on Triton in process", flush=True)
        rows += run_echo_points(floor_levels, args.clients, args.duration, histories, args.seed, workdir,
                                gateway_defaults.grpc_workers, gateway_defaults.concurrent_rpcs)
        rows += run_triton_inproc_points(dep, floor_levels, args.duration, histories, args.seed,
                                         gateway_defaults.batching, args.ort_threads)
    for method in args.methods:
        row = run_inproc_point(dep, method, 1, args.duration, histories, args.seed,
                               BatchingConfig(max_wait_ms=0.0, workers=1), args.ort_threads, "inproc-direct")
        rows.append(row)
        print_row(row)
        for c in args.inproc_concurrency:
            row = run_inproc_point(dep, method, c, args.duration, histories, args.seed, gateway_defaults.batching,
                                   args.ort_threads, "inproc-pipeline")
            rows.append(row)
            print_row(row)
    shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.perf_counter() - t_start

    repo_manifest = json.loads((dep.repository / "llmrec.json").read_text())
    index_manifest = json.loads((dep.index / "manifest.json").read_text())
    sources = repo_manifest.get("sources") or {}
    settings = {
        "duration_s": args.duration, "concurrency": served_levels, "clients": args.clients,
        "inproc_concurrency": args.inproc_concurrency, "methods": args.methods, "k": K, "exclude_history": True,
        "max_history": args.max_history, "warmup_calls_per_thread": WARMUP_CALLS, "seed": args.seed,
        "ort_threads": args.ort_threads, "ort_inter_op_threads": {"triton": 0, "in_process": 1},
        "faiss_threads": args.faiss_threads, "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load],
        "embedder_checkpoint": shown_path(checkpoint), "srs": shown_path(srs),
        "deployment": shown_path(dep.root), "built_this_run": dep.built,
        "item_dim": (sources.get("embedder") or {}).get("dim"),
        "max_len": (sources.get("user_encoder") or {}).get("max_len"),
        "index_items": index_manifest.get("count"), "index_factory": index_manifest.get("factory"),
        "triton_repository": repo_manifest.get("options"),
        "gateway": {k: v for k, v in asdict(gateway_defaults).items() if k in ("grpc_workers", "batching",
                                                                                "max_concurrent_rpcs")},
        "index_backends": args.index_backends, "gateway_config": configs,
        "time_split": "see the module docstring of bench/serving_load.py",
    }
    payload = {"benchmark": "serving_load", "settings": settings, "seconds": round(seconds, 1),
               "rows": [rounded(r) for r in rows], "ratios": ratios(rows), "backend_ratios": backend_ratios(rows),
               "floors": floors(rows),
               "gateway_log_tail": gateway_logs}
    png = RESULTS / f"{args.name}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    has_png = plot(rows, png)
    payload["plot"] = png.name if has_png else None
    path = write_result(args.name, payload)
    text = markdown(payload)
    (RESULTS / f"{args.name}.md").write_text(text)
    print()
    print(text)
    print(f"wrote {path}, {args.name}.md" + (f", {png.name}" if has_png else "") + f" in {seconds:.0f} s")
    return 0


def print_row(r: dict[str, Any]) -> None:
    print(f"  {r['mode']:<15} {r['index_backend']:<6} {r['method']:<11} c={r['concurrency']:<3} "
          f"calls {r.get('calls', 0):>6}  "
          f"{r.get('throughput', 0):8.1f}/s  p50 {r.get('p50_ms', 0):7.2f}  p95 {r.get('p95_ms', 0):7.2f}  "
          f"p99 {r.get('p99_ms', 0):7.2f} ms  triton {r.get('triton_ms', 0):6.2f}  index {r.get('index_ms', 0):6.3f}"
          + (f"  gateway {r.get('gateway_ms', 0):6.2f}  network {r.get('network_ms', 0):6.2f}" if r['mode'] == 'grpc'
             else "") + (f"  errors {r['errors']}" if r.get("errors") else ""), flush=True)


if __name__ == "__main__":
    sys.exit(main())
