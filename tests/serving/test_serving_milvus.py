"""The catalogue on Milvus (Milvus Lite, the real engine in this process from a local file): the same answers as
the embedded FAISS catalogue, alone and behind the gateway (Recommend top-10 equal to exact search, upsert
recommendable at once, delete gone, bad inputs the same codes), ids Milvus's expressions could misread, and a
collection that outlives its client."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from serving.gateway import Gateway, config_from_dict
from serving.index import ItemIndex, ItemStore, milvus_catalog
from serving.index.catalog import Catalog, MissingItems
from serving.index.milvus_catalog import MilvusCatalog, MilvusError, MilvusSettings, open_milvus_catalog
from serving.proto.llmrec.v2 import recommend_pb2 as pb
from serving.proto.llmrec.v2 import recommend_pb2_grpc as pb_grpc
from serving.triton.server import free_port

pytest.importorskip("pymilvus")


def faiss_catalog(deployment) -> Catalog:
    return Catalog(ItemIndex.load(deployment.index), ItemStore.load(deployment.index))


def test_milvus_catalogue_answers_as_the_faiss_one(deployment, tmp_path):
    keys = sys.modules["llmrec_gateway_deployment"].keys
    reference = faiss_catalog(deployment)
    settings = MilvusSettings(str(tmp_path / "milvus.db"))
    with pytest.raises(MilvusError, match="does not exist"):
        MilvusCatalog(settings)
    milvus = open_milvus_catalog(settings, deployment.index)  # created and filled from the snapshot
    assert len(milvus) == len(reference) and milvus.dim == reference.dim
    some = keys([1, 5, 9, 2])
    np.testing.assert_allclose(milvus.vectors_of(some), reference.vectors_of(some), rtol=0, atol=1e-6)
    with pytest.raises(MissingItems) as missing:
        milvus.vectors_of([some[0], "no-such-id"])
    assert missing.value.keys == ["no-such-id"]
    users = np.random.default_rng(0).normal(size=(4, milvus.dim)).astype(np.float32)
    exclude = [[], some[:2], keys(list(range(1, 30))), ["unknown"]]
    for ours, theirs in zip(milvus.search(users, 10, exclude), reference.search(users, 10, exclude), strict=True):
        assert [i.key for i, _ in ours] == [i.key for i, _ in theirs]  # exact search, the same order
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], rtol=1e-5)
        assert [i.title for i, _ in ours] == [i.title for i, _ in theirs]
    assert [i.title if i else None for i in milvus.items([some[0], "nope"])] == [reference.items([some[0]])[0].title,
                                                                                  None]
    # writes: own ids (also ones with quotes and backslashes), assigned ids, replace, delete
    odd = ['say "hi"', "back\\slash", "it's"]
    vectors = np.eye(3, milvus.dim, dtype=np.float32)
    written = milvus.upsert([*odd, ""], np.vstack([vectors, vectors[:1]]),
                            [("a", {"k": "v"}), ("b", {}), ("c", {}), ("d", {})])
    assert written[:3] == odd and written[3].startswith("new-") and len(written[3]) == 4 + 16
    assert [i.title for i in milvus.items(odd)] == ["a", "b", "c"] and milvus.items(odd)[0].attributes == {"k": "v"}
    assert milvus.upsert([odd[0]], vectors[1:2], [("a2", {})]) == [odd[0]]
    assert milvus.items([odd[0]])[0].title == "a2" and len(milvus) == len(reference) + 4
    assert milvus.delete([odd[1], "never-there"]) == (1, ["never-there"])
    assert milvus.items([odd[1]]) == [None]
    assert milvus.delete([some[3]]) == (1, [])  # an item of the snapshot
    milvus.close()
    again = open_milvus_catalog(settings, deployment.index)  # exists: opened, not filled again
    assert len(again) == len(reference) + 2 and again.items([odd[0]])[0].title == "a2"
    assert again.items([some[3]]) == [None] and not again.created  # the acknowledged delete holds
    again.close()
    with pytest.raises(MilvusError, match="8-d"):
        MilvusCatalog(settings, dim=8)


def test_writes_are_sealed_off_the_callers_path(deployment, tmp_path, monkeypatch):
    """A search scans Milvus's growing segment row by row, so the catalogue flushes after the fill and, through the
    gateway's compaction hook, once FLUSH_EVERY rows were written; what was written stays found after the flush."""
    monkeypatch.setattr(milvus_catalog, "FLUSH_EVERY", 3)
    catalog = open_milvus_catalog(MilvusSettings(str(tmp_path / "milvus.db")), deployment.index)
    flushes = []
    real_flush = catalog.client.flush
    monkeypatch.setattr(catalog.client, "flush", lambda name, **kw: flushes.append(name) or real_flush(name, **kw))
    assert catalog.unflushed == 0 and not catalog.needs_compaction()  # the fill was sealed
    vectors = np.eye(3, catalog.dim, dtype=np.float32) * 100.0
    catalog.upsert(["w1", "w2"], vectors[:2], [("one", {}), ("two", {})])
    assert not catalog.needs_compaction()
    assert catalog.delete(["w2"]) == (1, [])
    assert catalog.needs_compaction() and flushes == []  # three rows written: due, not yet done
    catalog.compact()
    assert flushes == [catalog.settings.collection] and catalog.unflushed == 0 and not catalog.needs_compaction()
    catalog.compact()  # nothing new: no flush
    assert len(flushes) == 1
    [(item, _), *_] = catalog.search(vectors[:1], 1, [[]])[0]
    assert item.key == "w1" and catalog.items(["w2"]) == [None]
    catalog.close()


def gateway_config(deployment, **values):
    return config_from_dict({"port": 0, "metrics_port": None, "backend": "onnxruntime", "persist": False,
                             "model_repository": str(deployment.repository), "index": str(deployment.index),
                             "health_interval_s": 0.2, **values})


def test_the_gateway_on_milvus_answers_as_on_faiss(deployment, tmp_path):
    keys = sys.modules["llmrec_gateway_deployment"].keys
    milvus = gateway_config(deployment, index_backend="milvus", milvus={"uri": str(tmp_path / "m.db")})
    histories = [keys([1, 2, 3]), keys([7]), keys([4, 9, 12, 30, 31])]
    with Gateway(gateway_config(deployment)) as faiss_gw, Gateway(milvus) as milvus_gw, \
            grpc.insecure_channel(faiss_gw.address) as a, grpc.insecure_channel(milvus_gw.address) as b:
        on_faiss, on_milvus = pb_grpc.RecommenderStub(a), pb_grpc.RecommenderStub(b)
        for history in histories:
            for exclude in (False, True):
                request = pb.RecommendRequest(history=history, k=10, exclude_history=exclude)
                ours, theirs = on_milvus.Recommend(request, timeout=30), on_faiss.Recommend(request, timeout=30)
                assert [i.id for i in ours.items] == [i.id for i in theirs.items]
                np.testing.assert_allclose([i.score for i in ours.items], [i.score for i in theirs.items], rtol=1e-5)
        # an upsert is recommendable and usable in a history at once; a delete is gone
        written = on_milvus.UpsertItems(pb.UpsertItemsRequest(items=[pb.ItemUpsert(id="fresh", title="alpha beta")]),
                                        timeout=30)
        assert list(written.ids) == ["fresh"] and written.index_size == len(deployment.titles)
        only = on_milvus.Recommend(pb.RecommendRequest(history=histories[0], k=3, filter=pb.Filter(
            include_ids=["fresh"])), timeout=30)
        assert [i.id for i in only.items] == ["fresh"] and only.items[0].title == "alpha beta"
        assert len(on_milvus.Recommend(pb.RecommendRequest(history=["fresh"], k=3), timeout=30).items) == 3
        deleted = on_milvus.DeleteItems(pb.DeleteItemsRequest(ids=["fresh", "never"]), timeout=30)
        assert deleted.deleted == 1 and list(deleted.missing_ids) == ["never"]
        # the same refusals as on FAISS
        for request, code in ((pb.RecommendRequest(history=["fresh"], k=3), grpc.StatusCode.NOT_FOUND),
                              (pb.RecommendRequest(history=[], k=3), grpc.StatusCode.INVALID_ARGUMENT),
                              (pb.RecommendRequest(history=histories[0], k=0), grpc.StatusCode.INVALID_ARGUMENT)):
            for stub in (on_milvus, on_faiss):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.Recommend(request, timeout=30)
                assert refused.value.code() == code
        got = on_milvus.GetItems(pb.GetItemsRequest(ids=[histories[1][0], "fresh"]), timeout=30)
        assert [i.id for i in got.items] == histories[1] and list(got.missing_ids) == ["fresh"]


@pytest.fixture
def milvus_server(tmp_path):
    """`milvus-lite server` (the engine as its own process, one gRPC port for several clients); stopped by PID."""
    import shutil
    import subprocess
    import time

    from pymilvus import MilvusClient

    port = free_port()
    beside = Path(sys.executable).with_name("milvus-lite")  # the venv's console script
    binary = str(beside) if beside.is_file() else shutil.which("milvus-lite")
    process = subprocess.Popen([binary, "server", "--data-dir", str(tmp_path / "milvus-data"), "--host", "127.0.0.1",
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            MilvusClient(uri, timeout=2).close()
            break
        except Exception:  # noqa: BLE001 - not listening yet
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"milvus-lite server did not start: {process.stderr.read()[-2000:]!r}")
            time.sleep(0.2)
    try:
        yield uri
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        assert process.wait(timeout=15) is not None


def test_two_gateways_on_one_milvus_see_each_others_writes_at_once(deployment, milvus_server):
    """Stateless replicas: either gateway takes writes, the other sees them on its next call, no restart."""
    import time

    keys = sys.modules["llmrec_gateway_deployment"].keys
    config = gateway_config(deployment, index_backend="milvus", milvus={"uri": milvus_server})
    with Gateway(config) as first, Gateway(config) as second, grpc.insecure_channel(first.address) as a, \
            grpc.insecure_channel(second.address) as b:
        writers = [pb_grpc.RecommenderStub(a), pb_grpc.RecommenderStub(b)]
        latencies = []
        for n in range(10):
            writer, reader = writers[n % 2], writers[1 - n % 2]
            key = f"replica-{n}"
            writer.UpsertItems(pb.UpsertItemsRequest(items=[pb.ItemUpsert(id=key, title="alpha beta")]), timeout=30)
            t0 = time.perf_counter()
            got = reader.GetItems(pb.GetItemsRequest(ids=[key]), timeout=30)
            latencies.append(time.perf_counter() - t0)
            assert [i.id for i in got.items] == [key], f"{key} written through one gateway, not seen by the other"
            top = reader.Recommend(pb.RecommendRequest(history=keys([1, 2]), k=1, filter=pb.Filter(
                include_ids=[key])), timeout=30)
            assert [i.id for i in top.items] == [key]
        writers[0].DeleteItems(pb.DeleteItemsRequest(ids=["replica-3"]), timeout=30)
        assert list(writers[1].GetItems(pb.GetItemsRequest(ids=["replica-3"]), timeout=30).missing_ids) == ["replica-3"]
        assert len(first.pipeline.catalog) == len(second.pipeline.catalog) == len(deployment.titles) - 1 + 9
    print(f"write -> visible on the other gateway: first read after the ack, max {1000 * max(latencies):.1f} ms")
