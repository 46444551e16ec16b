"""Property-based fuzzing (hypothesis) of every request message against a running gateway with auth and persistence
on: random ids (catalogue ids: any Unicode, empty, control characters), k, texts (any Unicode, any length),
attributes, tokens, and raw bytes that are not a
valid message at all, invented method paths and arbitrary metadata (keys, values, binary entries, repeated
authorization headers). The gateway answers every call with a proper status and a message, never INTERNAL or a
stack trace, its metrics stay bounded, and it is still serving afterwards."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.gateway import Gateway, config_from_dict
from serving.proto.llmrec.v2 import recommend_pb2 as pb
from serving.proto.llmrec.v2 import recommend_pb2_grpc as pb_grpc

TOKEN = "fuzz-token"
GOOD = [("authorization", f"Bearer {TOKEN}")]
EXPECTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION}
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

ids = st.one_of(st.integers(0, 60).map(lambda i: f"i{i}"), st.sampled_from(["", " ", "new-1", "\x00", "a\nb"]),
                st.text(max_size=80))
id_lists = st.lists(ids, max_size=12)
texts = st.one_of(st.sampled_from(["alpha beta", "", "   "]), st.text(max_size=80), st.text(min_size=60, max_size=90))
metadata = st.sampled_from([GOOD, GOOD, GOOD, None, [("authorization", "Bearer wrong")],
                            [("authorization", TOKEN)]])


@pytest.fixture(scope="module")
def gateway(deployment, tmp_path_factory):
    import shutil

    index = tmp_path_factory.mktemp("fuzz") / "index"
    shutil.copytree(deployment.index, index)
    token = index.parent / "token"
    token.write_text(TOKEN)
    config = config_from_dict({
        "port": 0, "metrics_port": None, "backend": "onnxruntime", "model_repository": str(deployment.repository),
        "index": str(index), "persist": True, "compact_every": 20, "max_message_bytes": 8192,
        "auth": {"enabled": True, "token_file": str(token)},
        "limits": {"max_history": 20, "max_k": 10, "max_texts": 4, "max_items": 4, "max_text_bytes": 64,
                   "max_attributes": 3, "max_filter_ids": 8}})
    with Gateway(config) as running, grpc.insecure_channel(running.address) as channel:
        yield running, channel


def answered(call, request, meta) -> None:
    try:
        call(request, timeout=10, metadata=meta)
    except grpc.RpcError as error:
        assert error.code() in EXPECTED, (error.code(), error.details())
        assert error.details() and "Traceback" not in error.details()


@SETTINGS
@given(history=id_lists, k=st.integers(-2**31, 2**31 - 1), exclude=st.booleans(), exclude_ids=id_lists,
       include_ids=id_lists, meta=metadata)
def test_fuzz_recommend(gateway, history, k, exclude, exclude_ids, include_ids, meta):
    stub = pb_grpc.RecommenderStub(gateway[1])
    request = pb.RecommendRequest(history=history, k=k, exclude_history=exclude,
                                  filter=pb.Filter(exclude_ids=exclude_ids, include_ids=include_ids))
    answered(stub.Recommend, request, meta)


@SETTINGS
@given(items=st.lists(st.builds(pb.ItemUpsert, id=ids, title=texts, text=texts,
                                attributes=st.dictionaries(texts, texts, max_size=4)), max_size=5),
       meta=metadata)
def test_fuzz_upsert(gateway, items, meta):
    answered(pb_grpc.RecommenderStub(gateway[1]).UpsertItems, pb.UpsertItemsRequest(items=items), meta)


@SETTINGS
@given(texts_=st.lists(texts, max_size=6), delete=id_lists, get=id_lists, meta=metadata)
def test_fuzz_embed_delete_get(gateway, texts_, delete, get, meta):
    stub = pb_grpc.RecommenderStub(gateway[1])
    answered(stub.EmbedItems, pb.EmbedItemsRequest(texts=texts_), meta)
    answered(stub.DeleteItems, pb.DeleteItemsRequest(ids=delete), meta)
    answered(stub.GetItems, pb.GetItemsRequest(ids=get), meta)


@SETTINGS
@given(method=st.sampled_from(["Recommend", "EmbedItems", "UpsertItems", "DeleteItems", "GetItems"]),
       raw=st.one_of(st.binary(max_size=200), st.binary(min_size=9000, max_size=9100)))
def test_fuzz_raw_bytes_and_oversized_messages(gateway, method, raw):
    call = gateway[1].unary_unary(f"/llmrec.v2.Recommender/{method}", request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
    answered(call, raw, GOOD)


# metadata keys gRPC accepts from a client: lower-case ASCII letters, digits, "-", "_", "."; "-bin" keys carry bytes
meta_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=20).filter(
    lambda k: not k.startswith("grpc-") and k not in ("te", "content-type", "user-agent"))
meta_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=60)
entries = st.one_of(st.tuples(meta_keys.filter(lambda k: not k.endswith("-bin")), meta_values),
                    st.tuples(meta_keys.map(lambda k: k.rstrip("-") + "-bin"), st.binary(max_size=40)),
                    st.tuples(st.just("authorization"), st.one_of(meta_values, st.just(f"Bearer {TOKEN}"),
                                                                  st.just("bearer  " + TOKEN + " "))))
method_names = st.one_of(st.sampled_from(["Recommend", "GetItems", "recommend", "GetItems/", "", "Health"]),
                         st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=40))


@SETTINGS
@given(method=method_names, service=st.sampled_from(["llmrec.v2.Recommender", "llmrec.v2.Recommender",
                                                     "grpc.health.v1.Health", "x"]),
       meta=st.lists(entries, max_size=5), raw=st.binary(max_size=40))
def test_fuzz_method_names_and_metadata(gateway, method, service, meta, raw):
    call = gateway[1].unary_unary(f"/{service}/{method}", request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
    try:
        call(raw, timeout=10, metadata=meta)
    except grpc.RpcError as error:
        assert error.code() in EXPECTED | {grpc.StatusCode.UNIMPLEMENTED}, (error.code(), error.details())
        assert "Traceback" not in (error.details() or "")


def test_still_serving_after_the_fuzzing(gateway):
    running, channel = gateway
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    stub = pb_grpc.RecommenderStub(channel)
    assert len(stub.GetItems(pb.GetItemsRequest(ids=["i1"]), timeout=10, metadata=GOOD).items) <= 1
    size = stub.DeleteItems(pb.DeleteItemsRequest(ids=["no such item"]), timeout=10, metadata=GOOD).index_size
    assert size == len(running.pipeline.catalog)
    methods = {s.labels.get("method") for m in running.metrics.registry.collect() for s in m.samples}
    assert methods - {None} <= {"Recommend", "EmbedItems", "UpsertItems", "DeleteItems", "GetItems", "unknown"}
