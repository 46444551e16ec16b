"""End-to-end tests of the gRPC gateway: a real Triton serving tiny exported models, the gateway on free ports
on 127.0.0.1, real gRPC calls; answers compared with the offline torch computation."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmrec.logs import setup_logging
from serving.gateway import Gateway, config_from_dict
from serving.gateway.backends import OnnxRuntimeBackend
from serving.proto.llmrec.v2 import recommend_pb2 as pb
from serving.proto.llmrec.v2 import recommend_pb2_grpc as pb_grpc
from serving.triton import TritonServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def _deployment_module():
    import importlib.util

    name = "llmrec_gateway_deployment"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("deployment.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


DEP = _deployment_module()


def gateway_config(deployment, **values):
    base = {"port": 0, "metrics_port": 0, "model_repository": str(deployment.repository),
            "index": str(deployment.index), "persist": False,  # the index is shared by the module's tests
            "health_interval_s": 0.2, "batching": {"max_wait_ms": 5.0}}
    return config_from_dict({**base, **values})


@pytest.fixture(scope="module")
def srs(deployment):
    return DEP.load_srs(deployment)


@pytest.fixture(scope="module")
def gateway_triton(deployment):
    server = TritonServer(deployment.repository, exit_timeout=5, startup_timeout=90)
    server.start()
    process = server._process
    try:
        yield server
    finally:
        server.stop()
        assert process.poll() is not None


@pytest.fixture(scope="module")
def gateway(deployment, gateway_triton):
    with Gateway(gateway_config(deployment, triton={"url": gateway_triton.http_url})) as running:
        yield running


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(gateway.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.RecommenderStub(channel)


def sample_histories(planted_data, count: int = 8) -> list[list[int]]:
    """Real user sequences of the planted dataset without their last item (longer than max_len), plus short ones."""
    histories = [[int(i) for i in seq[:-1]] for seq in planted_data.sequences[:count]]
    return histories + [[int(planted_data.sequences[0][0])], [3, 5]]


def metric_lines(gateway) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5) as response:
        return response.read().decode().splitlines()


def metric_value(lines: list[str], name: str, **labels: str) -> float:
    for line in lines:
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# ---------------------------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("exclude_history", [True, False])
def test_recommend_equals_offline_torch_and_exact_search(stub, srs, planted_data, deployment, exclude_history):
    for history in sample_histories(planted_data):
        response = stub.Recommend(pb.RecommendRequest(history=DEP.keys(history), k=10,
                                                      exclude_history=exclude_history), timeout=30)
        ids, scores = DEP.offline_top_k(srs, history, 10, exclude_history)
        assert [item.id for item in response.items] == DEP.keys(ids), history  # the catalogue's ids on the wire
        np.testing.assert_allclose([item.score for item in response.items], scores, rtol=1e-4, atol=1e-4)
        assert [item.title for item in response.items] == [deployment.titles[i] for i in ids]
        if exclude_history:
            assert not set(ids) & set(history)


def test_recommend_filter_include_and_exclude(stub, srs, planted_data):
    history = sample_histories(planted_data)[1]
    ranked, _ = DEP.offline_top_k(srs, history, 40, exclude_history=True)
    among = ranked[5:15][::-1]
    response = stub.Recommend(pb.RecommendRequest(history=DEP.keys(history), k=3, exclude_history=True,
                                                  filter=pb.Filter(include_ids=DEP.keys(among))), timeout=30)
    assert [i.id for i in response.items] == DEP.keys(ranked[5:8])
    response = stub.Recommend(pb.RecommendRequest(history=DEP.keys(history), k=5, exclude_history=True,
                                                  filter=pb.Filter(exclude_ids=[*DEP.keys(ranked[:2]), "unknown"])),
                              timeout=30)
    assert [i.id for i in response.items] == DEP.keys(ranked[2:7])


def test_embed_items_equals_onnxruntime_and_the_catalogue(stub, deployment):
    from serving.index import ItemIndex

    titles = deployment.titles[1:6]
    response = stub.EmbedItems(pb.EmbedItemsRequest(texts=titles), timeout=30)
    vectors = np.array([v.values for v in response.vectors], dtype=np.float32)
    assert response.dim == vectors.shape[1] == 16
    local = OnnxRuntimeBackend(deployment.repository).encode_texts(titles)
    np.testing.assert_allclose(vectors, local, rtol=1e-4, atol=1e-5)
    # the catalogue rows are the torch embedder + SRS adapter of the same titles
    table = ItemIndex.load(deployment.index).vectors(np.arange(1, 6))
    cosine = (vectors * table).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(table, axis=1)
    assert cosine.min() > 0.9999


def test_triton_over_http_and_grpc_gives_onnxruntime_vectors(deployment, gateway_triton):
    """Both of Triton's endpoints, the same raw tensors: the vectors onnxruntime gives in process, bit for bit
    between the two protocols; batches above the model's max_batch_size are split; a kept-alive HTTP connection
    that the server closed is replaced without failing the call."""
    from serving.gateway.triton_client import TritonBackend

    rng = np.random.default_rng(3)
    local = OnnxRuntimeBackend(deployment.repository)
    clients = {url: TritonBackend(url) for url in (gateway_triton.http_url, gateway_triton.grpc_url)}
    try:
        for url, client in clients.items():
            assert client.ready(), url
        step = clients[gateway_triton.http_url].max_batch_size("user_encoder")
        n, max_len = step + 3, 8
        vectors = rng.standard_normal((n, max_len, 16), dtype=np.float32)
        mask = np.ones((n, max_len), np.int64)
        mask[:, :3] = 0
        vectors[:, :3] = 0
        users = {url: c.encode_users(vectors, mask) for url, c in clients.items()}
        np.testing.assert_array_equal(users[gateway_triton.http_url], users[gateway_triton.grpc_url])
        np.testing.assert_allclose(users[gateway_triton.http_url], local.encode_users(vectors, mask),
                                   rtol=1e-4, atol=1e-5)
        titles = deployment.titles[1:4]
        texts = {url: c.encode_texts(titles) for url, c in clients.items()}
        np.testing.assert_array_equal(texts[gateway_triton.http_url], texts[gateway_triton.grpc_url])
        np.testing.assert_allclose(texts[gateway_triton.http_url], local.encode_texts(titles), rtol=1e-4, atol=1e-5)
        http = clients[gateway_triton.http_url]
        http.transport._local.conn.sock.shutdown(2)  # as if the server had closed the idle connection
        np.testing.assert_array_equal(http.encode_texts(titles), texts[gateway_triton.http_url])
    finally:
        for client in clients.values():
            client.close()
        local.close()


def test_triton_url_must_name_an_endpoint(deployment):
    from serving.gateway.config import ConfigError

    for url in ("https://triton:8000", "triton", "http://triton", "grpc://:8001", "http://a:1/v2/models"):
        with pytest.raises(ConfigError, match="triton.url must be"):
            config_from_dict({"model_repository": str(deployment.repository), "index": str(deployment.index),
                              "triton": {"url": url}})
    for url in ("http://triton:8000", "10.0.0.7:8001", "http://[::1]:8000", "[::1]:8001"):
        assert config_from_dict({"triton": {"url": url}}).triton.url == url


def test_upsert_is_recommendable_usable_in_histories_then_delete(stub, srs, planted_data, deployment):
    n = planted_data.num_items
    history = DEP.keys(sample_histories(planted_data)[2])
    before = [i.id for i in stub.Recommend(pb.RecommendRequest(history=history, k=10, exclude_history=True),
                                           timeout=30).items]
    top = before[0]
    upsert = stub.UpsertItems(pb.UpsertItemsRequest(items=[
        pb.ItemUpsert(title="a brand new item", text=deployment.titles[DEP.rows([top])[0]],
                      attributes={"genres": "Drama"}),
        pb.ItemUpsert(id="sku-500", title=deployment.titles[3])]), timeout=30)
    # no id: one is assigned ("new-<row>", the row above every row in use and in the call); an id given is kept
    assert list(upsert.ids) == [f"new-{n + 1}", "sku-500"] and upsert.index_size == n + 2
    new = upsert.ids[0]
    # the new item embeds like the top item (same text): it ranks beside it
    after = [i.id for i in stub.Recommend(pb.RecommendRequest(history=history, k=10, exclude_history=True),
                                          timeout=30).items]
    assert new in after[:2] and top in after[:2]
    # usable in a history at once
    response = stub.Recommend(pb.RecommendRequest(history=[*history, new], k=10, exclude_history=True), timeout=30)
    assert len(response.items) == 10 and new not in [i.id for i in response.items]
    got = stub.GetItems(pb.GetItemsRequest(ids=[new, top, "9999"]), timeout=30)
    assert [(i.id, i.title) for i in got.items] == [(new, "a brand new item"),
                                                   (top, deployment.titles[DEP.rows([top])[0]])]
    assert dict(got.items[0].attributes) == {"genres": "Drama"} and list(got.missing_ids) == ["9999"]
    # an id in use replaces that item (same id, new title)
    replaced = stub.UpsertItems(pb.UpsertItemsRequest(items=[pb.ItemUpsert(id="sku-500", title="renamed")]),
                                timeout=30)
    assert list(replaced.ids) == ["sku-500"] and replaced.index_size == n + 2
    assert [i.title for i in stub.GetItems(pb.GetItemsRequest(ids=["sku-500"]), timeout=30).items] == ["renamed"]

    deleted = stub.DeleteItems(pb.DeleteItemsRequest(ids=[new, "sku-500", "9999"]), timeout=30)
    assert deleted.deleted == 2 and list(deleted.missing_ids) == ["9999"] and deleted.index_size == n
    again = [i.id for i in stub.Recommend(pb.RecommendRequest(history=history, k=10, exclude_history=True),
                                          timeout=30).items]
    assert again == before == DEP.keys(DEP.offline_top_k(srs, DEP.rows(history), 10, True)[0])
    with pytest.raises(grpc.RpcError) as info:
        stub.Recommend(pb.RecommendRequest(history=[*history, new], k=10), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and new in info.value.details()
    assert list(stub.GetItems(pb.GetItemsRequest(ids=[new]), timeout=30).missing_ids) == [new]


# ---------------------------------------------------------------------------------------------- standard services
def test_health_serving_and_reflection_lists_the_service(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "llmrec.v2.Recommender"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                timeout=5)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"llmrec.v2.Recommender", "grpc.health.v1.Health"} <= names


def test_concurrent_calls_are_coalesced_into_batches(stub, gateway, planted_data):
    histories = [DEP.keys(seq[: 3 + u % 15]) for u, seq in enumerate(planted_data.sequences[:48])]
    expected = [[i.id for i in stub.Recommend(pb.RecommendRequest(history=h, k=5, exclude_history=True),
                                              timeout=30).items] for h in histories[:6]]
    before = metric_lines(gateway)
    batches0 = metric_value(before, "llmrec_gateway_batch_size_count", queue="recommend")
    results: dict[int, list[str]] = {}
    start = threading.Barrier(len(histories))

    def call(u: int) -> None:
        start.wait()
        response = stub.Recommend(pb.RecommendRequest(history=histories[u], k=5, exclude_history=True), timeout=60)
        results[u] = [i.id for i in response.items]

    threads = [threading.Thread(target=call, args=(u,)) for u in range(len(histories))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == len(histories)
    assert [results[u] for u in range(6)] == expected  # batching changes nothing in the answers
    after = metric_lines(gateway)
    batches = metric_value(after, "llmrec_gateway_batch_size_count", queue="recommend") - batches0
    assert 0 < batches < len(histories), "48 concurrent calls should need fewer batches than calls"


def test_metrics_endpoint_exposes_counters_and_timings(stub, gateway, planted_data):
    stub.Recommend(pb.RecommendRequest(history=DEP.keys([1, 2, 3]), k=3), timeout=30)
    with pytest.raises(grpc.RpcError):
        stub.Recommend(pb.RecommendRequest(history=DEP.keys([1, 2, 3]), k=0), timeout=30)
    lines = metric_lines(gateway)
    assert metric_value(lines, "llmrec_gateway_requests_total", method="Recommend", code="OK") >= 1
    assert metric_value(lines, "llmrec_gateway_requests_total", method="Recommend", code="INVALID_ARGUMENT") >= 1
    assert metric_value(lines, "llmrec_gateway_request_seconds_count", method="Recommend") >= 2
    assert metric_value(lines, "llmrec_gateway_triton_seconds_count", model="user_encoder") >= 1
    assert metric_value(lines, "llmrec_gateway_index_seconds_count", operation="search") >= 1
    assert metric_value(lines, "llmrec_gateway_index_items") == planted_data.num_items
    assert metric_value(lines, "llmrec_gateway_ready") == 1


@pytest.mark.parametrize("scheme", ["http://", ""])
def test_triton_down_is_not_serving_and_unavailable_fast(deployment, scheme):
    config = gateway_config(deployment, triton={"url": f"{scheme}127.0.0.1:{free_port()}", "timeout_s": 5.0})
    with Gateway(config) as down, grpc.insecure_channel(down.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest(service="llmrec.v2.Recommender"), timeout=5).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING
        # not ready, but alive: a liveness probe must not restart a gateway because Triton is away
        assert health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        stub = pb_grpc.RecommenderStub(ch)
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.Recommend(pb.RecommendRequest(history=DEP.keys([1, 2]), k=5), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() - t0 < 1.0
        assert "Traceback" not in info.value.details()
        # the catalogue does not need Triton
        assert [i.id for i in stub.GetItems(pb.GetItemsRequest(ids=["i0"]), timeout=5).items] == ["i0"]


# ---------------------------------------------------------------------------------------------- the two CLIs
def test_cli_gateway_and_client_print_titles(deployment, gateway_triton, srs, tmp_path):
    config = tmp_path / "serving.yaml"
    config.write_text(
        f"port: 0\nmetrics_port: null\nmodel_repository: {deployment.repository}\nindex: {deployment.index}\n"
        f"state_dir: {tmp_path / 'state'}\ntriton:\n  url: {gateway_triton.grpc_url}\n")  # durable writes: the default
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "serving", "gateway", "--config", str(config), "--quiet"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        ready = json.loads(line)
        assert ready["event"] == "gateway_ready" and ready["address"].startswith("127.0.0.1:")
        client = subprocess.run(
            [sys.executable, "-m", "serving", "client", "--address", ready["address"], "recommend", "--history",
             ",".join(DEP.keys([12, 7, 3])), "-k", "5"], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=60)
        assert client.returncode == 0, client.stderr
        ids, _ = DEP.offline_top_k(srs, [12, 7, 3], 5, exclude_history=True)
        lines = client.stdout.strip().splitlines()
        assert len(lines) == 5
        for line, item in zip(lines, ids, strict=True):
            assert deployment.titles[item] in line and f"id {DEP.key(item)}," in line
        bad = subprocess.run([sys.executable, "-m", "serving", "client", "--address", ready["address"], "recommend",
                              "--history", "i11,i6", "-k", "0"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60)
        assert bad.returncode == 1 and bad.stderr.startswith("error: INVALID_ARGUMENT: k is 0")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "state").iterdir())[-1].startswith("wal-")  # persisted by default


# ---------------------------------------------------------------------------------------------- structure
class FileTracer:
    """Records the project modules (generated protocol stubs aside) whose code runs in this process while
    `recording`: installed as the profile hook of every thread started after `install` (the gateway's)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.recording = False
        self.roots = tuple(str(ROOT / name) for name in ("serving", "llmrec"))

    def __call__(self, frame, event, arg):
        if self.recording and event == "call":
            path = frame.f_code.co_filename
            if path.startswith(self.roots) and not path.endswith(("_pb2.py", "_pb2_grpc.py")):
                self.seen.add(str(Path(path).relative_to(ROOT)))

    def files_of(self, call) -> list[str]:
        self.seen, self.recording = set(), True
        try:
            call()
        finally:
            self.recording = False
        return sorted(self.seen)


# every project file whose code runs in the gateway for one call, as README ("Where things are") lists them,
# besides the log handler every log line of the process passes through
LOG_HANDLER = "llmrec/logs.py"
CALL_PATHS = {
    "Recommend": ["serving/gateway/pipeline.py", "serving/gateway/service.py", "serving/gateway/triton_client.py",
                  "serving/index/catalog.py", "serving/index/item_index.py"],
    "UpsertItems": ["llmrec/itemtext.py", "serving/gateway/pipeline.py", "serving/gateway/service.py",
                    "serving/gateway/triton_client.py", "serving/index/catalog.py", "serving/index/item_index.py"],
}


def test_a_call_runs_through_the_files_readme_lists(deployment, gateway_triton, tmp_path):
    """What a reader follows from the wire to FAISS and back, measured: every project file a call's code runs in
    (with Triton as the backend and the write-ahead log on)."""
    import shutil

    index = tmp_path / "index"
    shutil.copytree(deployment.index, index)
    config = gateway_config(deployment, index=str(index), persist=True, health_interval_s=3600.0,
                            triton={"url": gateway_triton.grpc_url})
    tracer = FileTracer()
    root = logging.getLogger("llmrec")
    saved = (root.handlers[:], root.level, root.propagate)
    setup_logging()  # as `python -m serving gateway` does: the upsert's log line goes through the handler
    threading.setprofile(tracer)
    try:
        with Gateway(config) as running, grpc.insecure_channel(running.address) as ch:
            stub = pb_grpc.RecommenderStub(ch)
            recommend = pb.RecommendRequest(history=DEP.keys([1, 2, 3]), k=5)
            upsert = pb.UpsertItemsRequest(items=[pb.ItemUpsert(title="a new item")])
            stub.Recommend(recommend, timeout=30)  # first calls: lazy imports and thread start-up
            stub.UpsertItems(upsert, timeout=60)
            paths = {"Recommend": tracer.files_of(lambda: stub.Recommend(recommend, timeout=30)),
                     "UpsertItems": tracer.files_of(lambda: stub.UpsertItems(upsert, timeout=60))}
    finally:
        threading.setprofile(None)
        root.handlers[:], root.level, root.propagate = saved
    print(json.dumps(paths, indent=1))
    assert {method: [f for f in files if f != LOG_HANDLER] for method, files in paths.items()} == CALL_PATHS
