"""The gateway's refusals over real gRPC calls: every field validated (the message names the field and its limit),
auth, limits, the bounded queue, deadlines, no stack traces. The models run in-process (onnxruntime backend on the
same tiny repository), so these tests need no Triton."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.gateway import ConfigError, Gateway, GatewayConfig, config_from_dict, load_config
from serving.gateway.backends import OnnxRuntimeBackend
from serving.gateway.service import find_invalid_utf8
from serving.proto.llmrec.v2 import recommend_pb2 as pb
from serving.proto.llmrec.v2 import recommend_pb2_grpc as pb_grpc

TOKEN = "s3cret-token-for-tests"
LIMITS = {"max_history": 50, "max_k": 20, "max_texts": 4, "max_items": 3, "max_text_bytes": 64,
          "max_attributes": 2, "max_filter_ids": 5}


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


def config(deployment, **values) -> GatewayConfig:
    base = {"port": 0, "metrics_port": None, "backend": "onnxruntime", "model_repository": str(deployment.repository),
            "index": str(deployment.index), "persist": False, "health_interval_s": 0.2, "limits": LIMITS}
    return config_from_dict({**base, **values})


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="module")
def gateway(deployment, token_file):
    cfg = config(deployment, max_message_bytes=16384, auth={"enabled": True, "token_file": str(token_file)})
    with Gateway(cfg) as running:
        yield running


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(gateway.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.RecommenderStub(channel)


AUTH = [("authorization", f"Bearer {TOKEN}")]


def refused(call, request, code: grpc.StatusCode, *fragments: str, metadata=AUTH) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10, metadata=metadata)
    details = info.value.details()
    assert info.value.code() == code, details
    for fragment in fragments:
        assert fragment in details, details
    assert "Traceback" not in details and "File \"" not in details
    return details


# ---------------------------------------------------------------------------------------------- fields
K = DEP.keys  # catalogue ids of rows: the planted items are "i0", "i1", ...
RECOMMEND_CASES = [
    ({"history": [], "k": 5}, grpc.StatusCode.INVALID_ARGUMENT, ["history is empty", "50"]),
    ({"history": K(range(1, 41)) * 2, "k": 5}, grpc.StatusCode.INVALID_ARGUMENT, ["history has 80", "limit of 50"]),
    ({"history": ["i2", ""], "k": 5}, grpc.StatusCode.INVALID_ARGUMENT, ["history[1] is empty", "64 bytes"]),
    ({"history": ["i2", "x" * 65], "k": 5}, grpc.StatusCode.INVALID_ARGUMENT, ["history[1] is 65 bytes",
                                                                               "limit of 64"]),
    ({"history": ["i2", "a\nb"], "k": 5}, grpc.StatusCode.INVALID_ARGUMENT, ["history[1] holds a control"]),
    ({"history": ["i2", "9999", "4242"], "k": 5}, grpc.StatusCode.NOT_FOUND, ["history", "'4242', '9999'"]),
    ({"history": ["2"], "k": 5}, grpc.StatusCode.NOT_FOUND, ["'2'"]),  # a row number is not a catalogue id
    ({"history": ["i2"], "k": 0}, grpc.StatusCode.INVALID_ARGUMENT, ["k is 0", "between 1 and 20"]),
    ({"history": ["i2"], "k": -3}, grpc.StatusCode.INVALID_ARGUMENT, ["k is -3"]),
    ({"history": ["i2"], "k": 21}, grpc.StatusCode.INVALID_ARGUMENT, ["k is 21", "20"]),
    ({"history": ["i2"], "k": 5, "filter": pb.Filter(include_ids=["i0", "777"])}, grpc.StatusCode.NOT_FOUND,
     ["filter.include_ids", "'777'"]),
    ({"history": ["i2"], "k": 5, "filter": pb.Filter(include_ids=["i0", "i1", "i0"])},
     grpc.StatusCode.INVALID_ARGUMENT, ["filter.include_ids[2] repeats id 'i0'"]),
    ({"history": ["i2"], "k": 5, "filter": pb.Filter(exclude_ids=K(range(1, 8)))}, grpc.StatusCode.INVALID_ARGUMENT,
     ["filter.exclude_ids has 7", "limit of 5"]),
]


@pytest.mark.parametrize("fields, code, fragments", RECOMMEND_CASES)
def test_recommend_fields(stub, fields, code, fragments):
    refused(stub.Recommend, pb.RecommendRequest(**fields), code, *fragments)


TEXT_CASES = [
    ([], ["texts is empty", "4"]),
    (["ok", ""], ["texts[1] is empty"]),
    (["   "], ["texts[0] is empty"]),
    (["x" * 65], ["texts[0] is 65 bytes", "limit of 64 bytes"]),
    (["é" * 33], ["texts[0] is 66 bytes"]),
    (["a", "b", "c", "d", "e"], ["texts has 5", "limit of 4"]),
]


@pytest.mark.parametrize("texts, fragments", TEXT_CASES)
def test_embed_text_fields(stub, texts, fragments):
    refused(stub.EmbedItems, pb.EmbedItemsRequest(texts=texts), grpc.StatusCode.INVALID_ARGUMENT, *fragments)


UPSERT_CASES = [
    ([], ["items is empty"]),
    ([pb.ItemUpsert(id="sku-50", title="a"), pb.ItemUpsert(id="sku-50", title="b")],
     ["items[1].id repeats id 'sku-50'"]),
    ([pb.ItemUpsert(id="x" * 65, title="a")], ["items[0].id is 65 bytes"]),
    ([pb.ItemUpsert(id="tab\there", title="a")], ["items[0].id holds a control character"]),
    ([pb.ItemUpsert(id="sku-60")], ["items[0] has neither a title nor a text"]),
    ([pb.ItemUpsert(title="t" * 70)], ["items[0].title is 70 bytes", "64"]),
    ([pb.ItemUpsert(title="a", attributes={"a": "1", "b": "2", "c": "3"})], ["items[0].attributes has 3", "2"]),
    ([pb.ItemUpsert(title="a")] * 4, ["items has 4", "limit of 3"]),
]


@pytest.mark.parametrize("items, fragments", UPSERT_CASES)
def test_upsert_fields(stub, items, fragments):
    refused(stub.UpsertItems, pb.UpsertItemsRequest(items=items), grpc.StatusCode.INVALID_ARGUMENT, *fragments)


def test_delete_and_get_fields(stub):
    refused(stub.DeleteItems, pb.DeleteItemsRequest(ids=[]), grpc.StatusCode.INVALID_ARGUMENT, "ids is empty")
    refused(stub.DeleteItems, pb.DeleteItemsRequest(ids=["i4", "i4"]), grpc.StatusCode.INVALID_ARGUMENT,
            "ids[1] repeats")
    refused(stub.GetItems, pb.GetItemsRequest(ids=["i0", ""]), grpc.StatusCode.INVALID_ARGUMENT, "ids[1] is empty")
    refused(stub.GetItems, pb.GetItemsRequest(ids=K([1, 2, 3, 4])), grpc.StatusCode.INVALID_ARGUMENT, "limit of 3")


def _raw_call(channel, method: str):
    return channel.unary_unary(f"/llmrec.v2.Recommender/{method}", request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)


def test_invalid_utf8_names_the_field(channel):
    # texts[1] holds the bytes ff fe: protobuf itself refuses to parse it; the gateway names the field
    raw = pb.EmbedItemsRequest(texts=["ok"]).SerializeToString() + b"\x0a\x02\xff\xfe"
    refused(_raw_call(channel, "EmbedItems"), raw, grpc.StatusCode.INVALID_ARGUMENT, "texts[1] is not valid UTF-8")
    item = pb.ItemUpsert(id="i2").SerializeToString() + b"\x12\x01\xc3"  # title = a truncated 2-byte sequence
    raw = b"\x0a" + bytes([len(item)]) + item
    refused(_raw_call(channel, "UpsertItems"), raw, grpc.StatusCode.INVALID_ARGUMENT,
            "items[0].title is not valid UTF-8")
    refused(_raw_call(channel, "Recommend"), b"\x0a\xff", grpc.StatusCode.INVALID_ARGUMENT,
            "not a valid llmrec.v2.RecommendRequest")


def test_find_invalid_utf8_walks_maps_and_nesting():
    entry = b"\x0a\x01k\x12\x01\xff"  # map entry key "k", value b"\xff"
    item = b"\x08\x05" + b"\x22" + bytes([len(entry)]) + entry
    raw = b"\x0a" + bytes([len(item)]) + item
    assert find_invalid_utf8(pb.UpsertItemsRequest.DESCRIPTOR, raw) == "items[0].attributes (a key or value)"
    assert find_invalid_utf8(pb.EmbedItemsRequest.DESCRIPTOR, pb.EmbedItemsRequest(texts=["é"]).SerializeToString()) \
        is None


def test_message_size_limit(stub):
    refused(stub.GetItems, pb.GetItemsRequest(ids=K(range(1, 20000))), grpc.StatusCode.RESOURCE_EXHAUSTED,
            "larger than max")


# ---------------------------------------------------------------------------------------------- auth
def test_auth_missing_or_wrong_token_is_unauthenticated(stub, channel, caplog):
    caplog.set_level(logging.DEBUG)
    request = pb.GetItemsRequest(ids=["i0"])
    refused(stub.GetItems, request, grpc.StatusCode.UNAUTHENTICATED, "authorization", metadata=None)
    refused(stub.GetItems, request, grpc.StatusCode.UNAUTHENTICATED, "not valid",
            metadata=[("authorization", "Bearer wrong")])
    refused(stub.Recommend, pb.RecommendRequest(history=["i0"], k=1), grpc.StatusCode.UNAUTHENTICATED,
            metadata=[("authorization", TOKEN)])  # no "Bearer" scheme
    assert [i.id for i in stub.GetItems(request, timeout=10, metadata=AUTH).items] == ["i0"]
    # health and reflection stay open
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    assert TOKEN not in caplog.text


def test_invented_method_names_do_not_grow_the_metrics(gateway, channel):
    """Refused calls are counted under the service's own method names or one `unknown` label, whatever the
    caller sends: 1,000 invented method paths add one series, not 1,000."""

    def series() -> set[tuple]:
        return {(s.name, tuple(sorted(s.labels.items()))) for m in gateway.metrics.registry.collect()
                for s in m.samples}

    before = series()
    for n in range(1000):
        call = channel.unary_unary(f"/llmrec.v2.Recommender/Invented{n}", request_serializer=None,
                                   response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    refused(_raw_call(channel, "GetItems"), b"", grpc.StatusCode.UNAUTHENTICATED, metadata=None)
    grown = series() - before
    labels = {dict(labels).get("method") for _, labels in grown}
    assert labels <= {"unknown", "GetItems"} and "unknown" in labels
    assert len(grown) <= 4, grown  # requests_total{method=unknown|GetItems, code=UNAUTHENTICATED} (+ created)
    assert gateway.metrics.registry.get_sample_value(
        "llmrec_gateway_requests_total", {"method": "unknown", "code": "UNAUTHENTICATED"}) == 1000


def test_auth_token_from_env_and_missing_token_refused(deployment, monkeypatch):
    monkeypatch.setenv("LLMREC_TEST_TOKEN", TOKEN)
    with Gateway(config(deployment, auth={"enabled": True, "token_env": "LLMREC_TEST_TOKEN"})) as running, \
            grpc.insecure_channel(running.address) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        assert len(stub.GetItems(pb.GetItemsRequest(ids=["i0", "i1"]), timeout=10, metadata=AUTH).items) == 2
        refused(stub.GetItems, pb.GetItemsRequest(ids=["i0"]), grpc.StatusCode.UNAUTHENTICATED, metadata=None)
    monkeypatch.delenv("LLMREC_TEST_TOKEN")
    with pytest.raises(ConfigError, match="LLMREC_TEST_TOKEN"):
        Gateway(config(deployment, auth={"enabled": True, "token_env": "LLMREC_TEST_TOKEN"})).start()


# ---------------------------------------------------------------------------------------------- load and failures
class SlowBackend:
    """The in-process models, `delay` seconds slower per call (to fill the queue deterministically)."""

    name = "slow"

    def __init__(self, inner: OnnxRuntimeBackend, delay: float, fail: bool = False) -> None:
        self.inner, self.delay, self.fail = inner, delay, fail

    def ready(self) -> bool:
        return True

    def encode_users(self, vectors, mask, timeout_s=None):
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom: an internal detail that must not reach the client")
        return self.inner.encode_users(vectors, mask)

    def encode_texts(self, texts, timeout_s=None):
        return self.inner.encode_texts(texts)

    def close(self) -> None:
        pass


def concurrent_codes(stub, callers: int, timeout: float) -> list[grpc.StatusCode]:
    """The status codes of `callers` Recommend calls sent at the same moment from as many threads."""
    codes: list[grpc.StatusCode] = []
    start = threading.Barrier(callers)

    def call() -> None:
        start.wait()
        try:
            stub.Recommend(pb.RecommendRequest(history=["i0", "i1"], k=3), timeout=timeout)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def test_full_queue_is_resource_exhausted_and_deadlines_are_honoured(deployment):
    backend = SlowBackend(OnnxRuntimeBackend(deployment.repository), delay=0.3)
    cfg = config(deployment, batching={"max_batch_size": 1, "max_queue": 1, "workers": 1, "max_wait_ms": 0})
    with Gateway(cfg, backend=backend) as running, grpc.insecure_channel(running.address) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        codes = concurrent_codes(stub, 6, timeout=20)
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.Recommend(pb.RecommendRequest(history=["i0", "i1"], k=3), timeout=0.1)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - t0 < 1.0
        time.sleep(0.4)
        assert len(stub.Recommend(pb.RecommendRequest(history=["i0", "i1"], k=3), timeout=10).items) == 3


def test_callers_beyond_the_threads_wait_for_one_instead_of_being_refused(deployment):
    """Concurrency is bounded by the batching queues' room, not by the server's threads: 48 callers on 2 threads
    (each call holds its thread for 50 ms) all get answers."""
    backend = SlowBackend(OnnxRuntimeBackend(deployment.repository), delay=0.05)
    cfg = config(deployment, grpc_workers=2, batching={"max_queue": 64, "max_wait_ms": 0})
    assert cfg.concurrent_rpcs == 2 + 2 * 64 and GatewayConfig().concurrent_rpcs == 32 + 2 * 1024
    with Gateway(cfg, backend=backend) as running, grpc.insecure_channel(running.address) as ch:
        codes = concurrent_codes(pb_grpc.RecommenderStub(ch), 48, timeout=60)
    assert codes == [grpc.StatusCode.OK] * 48


def test_internal_errors_carry_no_details(deployment):
    backend = SlowBackend(OnnxRuntimeBackend(deployment.repository), delay=0.0, fail=True)
    with Gateway(config(deployment), backend=backend) as running, grpc.insecure_channel(running.address) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        details = refused(stub.Recommend, pb.RecommendRequest(history=["i0", "i1"], k=3), grpc.StatusCode.INTERNAL,
                          "gateway log", metadata=None)
        assert "boom" not in details
        # EmbedItems still works: one failing model does not take the others down
        assert len(stub.EmbedItems(pb.EmbedItemsRequest(texts=["toy story"]), timeout=10).vectors) == 1


def test_in_process_backend_equals_offline(deployment, planted_data):
    srs = DEP.load_srs(deployment)
    with Gateway(config(deployment)) as running, grpc.insecure_channel(running.address) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        for seq in planted_data.sequences[10:14]:
            history = [int(i) for i in seq[:-1]]
            got = [i.id for i in stub.Recommend(pb.RecommendRequest(history=K(history), k=10, exclude_history=True),
                                                timeout=10).items]
            assert got == K(DEP.offline_top_k(srs, history, 10, True)[0])


def test_read_replica_refuses_writes_and_serves_reads(deployment, caplog):
    with caplog.at_level(logging.WARNING, logger="llmrec.gateway"):
        with Gateway(config(deployment, persist=True, read_only=True)) as running, \
                grpc.insecure_channel(running.address) as ch:
            stub = pb_grpc.RecommenderStub(ch)
            assert len(stub.Recommend(pb.RecommendRequest(history=["i2", "i4"], k=4), timeout=10).items) == 4
            assert [i.id for i in stub.GetItems(pb.GetItemsRequest(ids=["i1"]), timeout=10).items] == ["i1"]
            upsert = pb.UpsertItemsRequest(items=[pb.ItemUpsert(title="alpha beta")])
            refused(stub.UpsertItems, upsert, grpc.StatusCode.FAILED_PRECONDITION, "read replica", "UpsertItems",
                    metadata=None)
            refused(stub.DeleteItems, pb.DeleteItemsRequest(ids=["i1"]), grpc.StatusCode.FAILED_PRECONDITION,
                    "DeleteItems", metadata=None)
            assert len(running.pipeline.catalog) == len(deployment.titles) - 1
    assert not deployment.index.with_name("index-state").exists()  # a replica opens no state folder
    assert "writes_not_durable" not in caplog.text


def test_writes_are_durable_unless_turned_off(deployment, caplog):
    assert GatewayConfig().persist is True and GatewayConfig().read_only is False
    with caplog.at_level(logging.WARNING, logger="llmrec.gateway"):
        with Gateway(config(deployment)):  # persist: false (the module's gateways share one index)
            pass
    assert "writes_not_durable" in caplog.text and "lost when the gateway stops" in caplog.text


# ---------------------------------------------------------------------------------------------- config
def test_config_defaults_and_refusals(tmp_path, deployment):
    assert GatewayConfig().host == "127.0.0.1" and GatewayConfig().metrics_host == "127.0.0.1"
    path = tmp_path / "serving.yaml"
    path.write_text("port: 0\nbatching:\n  max_wait_ms: 1\n  max_batchsize: 8\n")
    with pytest.raises(ConfigError, match=r"batching\.max_batchsize"):
        load_config(path)
    path.write_text("port: 0\nlimits:\n  max_k: 0\n")
    with pytest.raises(ConfigError, match=r"limits\.max_k"):
        load_config(path)
    path.write_text("index: idx\nmodel_repository: repo\nauth:\n  token_file: tok\n"
                    "tls:\n  cert_file: c.pem\n  key_file: /abs/k.pem\n")
    loaded = load_config(path, overrides={"port": 0, "triton.url": "127.0.0.1:1"})
    assert loaded.index == str(tmp_path / "idx") and loaded.auth.token_file == str(tmp_path / "tok")
    assert (loaded.tls.cert_file, loaded.tls.key_file) == (str(tmp_path / "c.pem"), "/abs/k.pem")
    assert loaded.port == 0 and loaded.triton.url == "127.0.0.1:1"
    example = load_config(Path(__file__).resolve().parents[2] / "serving" / "serving.example.yaml")
    assert example.host == "127.0.0.1" and example.auth.enabled is False
    with Gateway(config(deployment)) as running:
        assert running.address.startswith("127.0.0.1:") and running.port > 0
