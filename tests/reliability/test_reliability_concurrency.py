"""Many clients at once against one persisting gateway: upserts (assigned and chosen ids), deletes, recommends and
reads. No acknowledged item lost or duplicated, assigned ids unique, readers never see an item without its title,
the index size equals the acknowledged writes, and the same state comes back after a restart."""

from __future__ import annotations

import threading
import time

import grpc

from serving.gateway import Gateway, config_from_dict
from serving.proto.llmrec.v2 import recommend_pb2 as pb
from serving.proto.llmrec.v2 import recommend_pb2_grpc as pb_grpc

WRITERS = 4
READERS = 3
SECONDS = 4.0


def index_size(stub) -> int:
    return stub.DeleteItems(pb.DeleteItemsRequest(ids=["no such item"]), timeout=10).index_size  # deletes nothing


def test_concurrent_writers_and_readers(deployment, index_copy, make_config, planted_data):
    config = config_from_dict(make_config(index_copy, persist=True, compact_every=25,
                                          batching={"max_wait_ms": 1.0}))
    base = planted_data.num_items
    acked: list[dict[str, str | None]] = [{} for _ in range(WRITERS)]
    assigned: list[list[str]] = [[] for _ in range(WRITERS)]
    problems: list[str] = []
    stop = threading.Event()

    def writer(k: int, stub) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if n % 4 == 0 and acked[k]:
                    victim = next((i for i, t in acked[k].items() if t is not None), None)
                    if victim is None:
                        continue
                    stub.DeleteItems(pb.DeleteItemsRequest(ids=[victim]), timeout=10)
                    acked[k][victim] = None
                else:
                    chosen = f"w{k}-{n % 50}"  # replaced again and again
                    items = [pb.ItemUpsert(title=f"alpha writer {k} call {n} a"),
                             pb.ItemUpsert(id=chosen, title=f"beta writer {k} call {n} b")]
                    reply = stub.UpsertItems(pb.UpsertItemsRequest(items=items), timeout=10)
                    new_id, same_id = reply.ids
                    if same_id != chosen:
                        problems.append(f"chosen id {chosen} answered as {same_id}")
                    assigned[k].append(new_id)
                    acked[k][new_id] = items[0].title
                    acked[k][chosen] = items[1].title
            except grpc.RpcError as error:
                problems.append(f"writer {k}: {error.code()} {error.details()}")

    def reader(k: int, stub) -> None:
        while not stop.is_set():
            try:
                got = stub.Recommend(pb.RecommendRequest(history=["i2", "i4", f"i{6 + k}"], k=30), timeout=10).items
                ids = [i.id for i in got]
                if len(set(ids)) != len(ids):
                    problems.append(f"duplicate ids in one answer: {ids}")
                if any(not i.title for i in got):
                    problems.append("an item without its title (a half-applied write)")
                items = stub.GetItems(pb.GetItemsRequest(ids=ids[:10] or ["i0"]), timeout=10)
                if any(not i.title for i in items.items):
                    problems.append("GetItems returned an item without its title")
            except grpc.RpcError as error:
                problems.append(f"reader {k}: {error.code()} {error.details()}")

    with Gateway(config) as gateway:
        channels = [grpc.insecure_channel(gateway.address) for _ in range(WRITERS + READERS)]
        try:
            stubs = [pb_grpc.RecommenderStub(ch) for ch in channels]
            # a client may name an item "new-<n>" itself: an assigned id never takes a name in use
            stubs[0].UpsertItems(pb.UpsertItemsRequest(items=[pb.ItemUpsert(id=f"new-{base + 3}",
                                                                            title="alpha anchor")]), timeout=10)
            acked[0][f"new-{base + 3}"] = "alpha anchor"
            threads = [threading.Thread(target=writer, args=(k, stubs[k])) for k in range(WRITERS)]
            threads += [threading.Thread(target=reader, args=(k, stubs[WRITERS + k])) for k in range(READERS)]
            for thread in threads:
                thread.start()
            time.sleep(SECONDS)
            stop.set()
            for thread in threads:
                thread.join(timeout=20)
            assert not problems, problems[:5]
            every_assigned = [i for ids in assigned for i in ids]
            assert len(every_assigned) == len(set(every_assigned)) > 10, "assigned ids must be unique"
            assert f"new-{base + 3}" not in every_assigned and all(i.startswith("new-") for i in every_assigned)
            expected = {i: t for state in acked for i, t in state.items()}
            alive = {i: t for i, t in expected.items() if t is not None}
            stub = stubs[0]
            assert index_size(stub) == base + len(alive)
            got = stub.GetItems(pb.GetItemsRequest(ids=sorted(alive)[:200]), timeout=10)
            assert {i.id: i.title for i in got.items} == {i: alive[i] for i in sorted(alive)[:200]}
            gone = sorted(i for i, t in expected.items() if t is None)[:200]
            if gone:
                assert sorted(stub.GetItems(pb.GetItemsRequest(ids=gone), timeout=10).missing_ids) == gone
        finally:
            for ch in channels:
                ch.close()
    # a restart (the stop compacted the log into a snapshot) serves exactly the same catalogue
    with Gateway(config) as again, grpc.insecure_channel(again.address) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        assert index_size(stub) == base + len(alive)
        ids = sorted(alive)
        for start in range(0, len(ids), 200):
            got = stub.GetItems(pb.GetItemsRequest(ids=ids[start:start + 200]), timeout=10)
            assert {i.id: i.title for i in got.items} == {i: alive[i] for i in ids[start:start + 200]}
