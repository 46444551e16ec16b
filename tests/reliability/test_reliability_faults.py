"""Faults with real processes: the gateway killed with SIGKILL in the middle of writes loses no acknowledged write;
a real Triton killed and restarted under load makes calls fail fast with UNAVAILABLE, health NOT_SERVING, and
service comes back by itself; a frozen (SIGSTOP) Triton is a slow dependency: deadlines hold, the queue stays
bounded, excess load is RESOURCE_EXHAUSTED; the Triton a gateway started itself, killed with SIGKILL, is restarted
by the gateway (calls UNAVAILABLE meanwhile, then the same answers), until its restart budget is spent.
Everything on loopback, every process stopped by its PID."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.gateway import Gateway, config_from_dict
from serving.proto.llmrec.v2 import recommend_pb2 as pb
from serving.proto.llmrec.v2 import recommend_pb2_grpc as pb_grpc
from serving.triton import TritonServer

SERVICE = "llmrec.v2.Recommender"
OK = grpc.StatusCode.OK


def title(item_id: str, version: int) -> str:
    return f"alpha beta {item_id} v{version}"


def status(channel: grpc.Channel) -> int:
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE),
                                                         timeout=2).status
    except grpc.RpcError:
        return -1


def wait_for(predicate, timeout: float, step: float = 0.05) -> float | None:
    """Seconds until predicate() held, None if it never did within timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(step)
    return None


# ---------------------------------------------------------------------------------------------- gateway crash
class Writer(threading.Thread):
    """Upserts and deletes ids of its own range; remembers what was acknowledged and what was in flight."""

    def __init__(self, address: str, first_id: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.address, self.first_id, self.stop_event = address, first_id, stop
        self.acked: dict[str, str | None] = {}  # catalogue id -> title, None = deleted (acknowledged)
        self.in_flight: set[str] = set()
        self.version = 0

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            n = 0
            while not self.stop_event.is_set():
                n += 1
                self.version += 1
                if n % 5 == 0 and self.acked:
                    victim = sorted(i for i, t in self.acked.items() if t is not None)[:1]
                    ids, call = victim, lambda v=victim: stub.DeleteItems(pb.DeleteItemsRequest(ids=v), timeout=10)
                else:
                    ids = [str(self.first_id + (n % 40)), str(self.first_id + 40 + n)]
                    items = [pb.ItemUpsert(id=i, title=title(i, self.version)) for i in ids]
                    call = lambda m=items: stub.UpsertItems(pb.UpsertItemsRequest(items=m), timeout=10)  # noqa: E731
                if not ids:
                    continue
                self.in_flight = set(ids)
                try:
                    call()
                except grpc.RpcError:
                    return  # the gateway died: this call's outcome is unknown (in_flight)
                for i in ids:
                    self.acked[i] = None if n % 5 == 0 else title(i, self.version)
                self.in_flight = set()


def check_recovered(address: str, writers: list[Writer], base_items: int) -> int:
    """Every acknowledged write is there (upserts with their last title, deletes gone); returns the index size."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        alive = 0
        for writer in writers:
            for item_id, expected in writer.acked.items():
                if item_id in writer.in_flight:
                    continue  # not acknowledged in its last state: either outcome is correct
                got = stub.GetItems(pb.GetItemsRequest(ids=[item_id]), timeout=10)
                if expected is None:
                    assert list(got.missing_ids) == [item_id], f"acknowledged delete of {item_id} lost"
                else:
                    assert [i.title for i in got.items] == [expected], f"acknowledged upsert of {item_id} lost"
                    alive += 1
        uncertain = sum(len(w.in_flight) for w in writers)
        size = stub.DeleteItems(pb.DeleteItemsRequest(ids=["no such item"]), timeout=10).index_size  # changes nothing
        assert base_items + alive <= size <= base_items + alive + uncertain
        return size


def test_gateway_killed_mid_write_loses_no_acknowledged_write(deployment, index_copy, make_config, spawn_gateway,
                                                              planted_data):
    config = make_config(index_copy, persist=True, compact_every=7)
    writers: list[Writer] = []
    for round_ in range(2):  # crash mid-write; recover and check, write again, clean stop (compaction); restart
        gateway = spawn_gateway(config)
        if round_:
            check_recovered(gateway.address, writers, planted_data.num_items)
        stop = threading.Event()
        fresh = [Writer(gateway.address, 100_000 * (round_ + 1) + 1000 * k, stop) for k in range(3)]
        for writer in fresh:
            writer.start()
        wait_for(lambda f=fresh: sum(len(w.acked) for w in f) >= 24, timeout=20)
        if round_ == 0:
            gateway.kill()  # SIGKILL while the writers are mid-call
        else:
            stop.set()
            for writer in fresh:
                writer.join(timeout=15)
            assert gateway.stop() == 0
        stop.set()
        for writer in fresh:
            writer.join(timeout=15)
        writers += fresh
        assert all(w.acked for w in fresh)
    with Gateway(config_from_dict(config)) as final:  # in-process: cheaper than a third child process
        assert final.pipeline.catalog.durable.report.replayed == 0  # the clean stop compacted everything
        check_recovered(final.address, writers, planted_data.num_items)
    snapshots = sorted(p.name for p in (index_copy.parent / "index-state").glob("snapshot-*"))
    assert 1 <= len(snapshots) <= 2  # compaction ran and kept at most two


def test_gateway_on_milvus_killed_mid_write_loses_no_acknowledged_write(index_copy, make_config, spawn_gateway,
                                                                        planted_data, tmp_path):
    """With index_backend: milvus the gateway keeps no log of its own: Milvus's persistence (Milvus Lite's write-
    ahead log here) holds every write the gateway acknowledged when the gateway process is killed."""
    pytest.importorskip("pymilvus")
    config = make_config(index_copy, index_backend="milvus", milvus={"uri": str(tmp_path / "milvus" / "items.db")})
    gateway = spawn_gateway(config)
    stop = threading.Event()
    writers = [Writer(gateway.address, 100_000 + 1000 * k, stop) for k in range(3)]
    for writer in writers:
        writer.start()
    wait_for(lambda: sum(len(w.acked) for w in writers) >= 24, timeout=30)
    gateway.kill()  # SIGKILL while the writers are mid-call
    stop.set()
    for writer in writers:
        writer.join(timeout=15)
    assert all(w.acked for w in writers)
    restarted = spawn_gateway(config)
    check_recovered(restarted.address, writers, planted_data.num_items)
    assert not (index_copy.parent / "index-state").exists()  # no gateway-side log with this backend


# ---------------------------------------------------------------------------------------------- Triton faults
@pytest.fixture(scope="module")
def triton(deployment):
    server = TritonServer(deployment.repository, exit_timeout=5, startup_timeout=90)
    server.start()
    try:
        yield server
    finally:
        if server.pid is not None:
            try:
                os.kill(server.pid, signal.SIGCONT)  # never leave it frozen: stop() needs it to answer SIGINT
            except ProcessLookupError:
                pass
        server.stop()


class Load(threading.Thread):
    """Closed-loop Recommend calls with a deadline; records (start, seconds, code)."""

    def __init__(self, address: str, deadline: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.address, self.deadline, self.stop_event = address, deadline, stop
        self.calls: list[tuple[float, float, grpc.StatusCode]] = []

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            while not self.stop_event.is_set():
                t0 = time.monotonic()
                try:
                    stub.Recommend(pb.RecommendRequest(history=["i2", "i4", "i6"], k=5), timeout=self.deadline)
                    code = OK
                except grpc.RpcError as error:
                    code = error.code()
                self.calls.append((t0, time.monotonic() - t0, code))
                if code != OK:
                    time.sleep(0.02)


def test_a_burst_of_sigterms_stops_the_gateway_cleanly(index_copy, make_config, spawn_gateway):
    """A dying parent or an impatient orchestrator may send many SIGTERMs at once: the gateway still shuts down
    (compacting its log: a clean stop, exit code 0), it does not deadlock in its own signal handler."""
    gateway = spawn_gateway(make_config(index_copy, persist=True))
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        stub.UpsertItems(pb.UpsertItemsRequest(items=[pb.ItemUpsert(id="90001", title="alpha beta")]), timeout=30)
    for _ in range(200):
        os.kill(gateway.process.pid, signal.SIGTERM)
    assert gateway.process.wait(timeout=60) == 0
    state = index_copy.with_name("index-state")
    assert any(p.name.startswith("snapshot-") for p in state.iterdir())  # compacted at the clean stop


def test_triton_killed_and_restarted_under_load(deployment, index_copy, triton):
    values = {"port": 0, "metrics_port": None, "model_repository": str(deployment.repository),
              "index": str(index_copy), "health_interval_s": 0.2, "triton": {"url": triton.http_url}}
    deadline = 2.0
    with Gateway(config_from_dict(values)) as gateway, grpc.insecure_channel(gateway.address) as channel:
        assert status(channel) == health_pb2.HealthCheckResponse.SERVING
        stop = threading.Event()
        load = [Load(gateway.address, deadline, stop) for _ in range(4)]
        for thread in load:
            thread.start()
        try:
            time.sleep(1.0)
            threads_before = threading.active_count()  # under load: the gRPC pool has its working threads
            killed = time.monotonic()
            triton.kill()  # SIGKILL: Triton crashes under load
            down = wait_for(lambda: status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=5)
            assert down is not None and down < 3.0, "health did not turn NOT_SERVING"
            time.sleep(1.0)
            triton.restart()  # same ports: the gateway's channel reconnects to the same address
            back_at = time.monotonic()
            up = wait_for(lambda: status(channel) == health_pb2.HealthCheckResponse.SERVING, timeout=10)
            assert up is not None and up < 5.0, "the gateway did not recover within 5 s of Triton's return"
            time.sleep(0.5)
            threads_after = threading.active_count()
        finally:
            stop.set()
            for thread in load:
                thread.join(timeout=deadline + 5)
        calls = [c for thread in load for c in thread.calls]
        during = [c for c in calls if killed <= c[0] < back_at]
        failed = [c for c in during if c[2] != OK]
        assert failed, "no call hit the outage"
        assert {c[2] for c in failed} == {grpc.StatusCode.UNAVAILABLE}, {c[2] for c in failed}
        assert max(c[1] for c in failed) < deadline, "a failing call was not answered within its deadline"
        assert sorted(c[1] for c in failed)[len(failed) // 2] < 0.2  # fail fast: the median is immediate
        after = [c for c in calls if c[0] >= back_at + up + 0.1]
        assert after and all(c[2] == OK for c in after)
        assert threads_after <= threads_before + 2, (threads_before, threads_after)  # no thread leak


def test_frozen_triton_deadlines_hold_and_the_queue_is_bounded(deployment, index_copy, triton):
    values = {"port": 0, "metrics_port": None, "model_repository": str(deployment.repository),
              "index": str(index_copy), "health_interval_s": 0.2,
              "triton": {"url": triton.http_url, "timeout_s": 5.0},
              "batching": {"max_batch_size": 1, "max_queue": 3, "workers": 1, "max_wait_ms": 0}}
    with Gateway(config_from_dict(values)) as gateway, grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        assert len(stub.Recommend(pb.RecommendRequest(history=["i2", "i4"], k=5), timeout=10).items) == 5
        results: list[tuple[float, grpc.StatusCode]] = []

        def call() -> None:
            t0 = time.monotonic()
            try:
                stub.Recommend(pb.RecommendRequest(history=["i2", "i4"], k=5), timeout=1.0)
                results.append((time.monotonic() - t0, OK))
            except grpc.RpcError as error:
                results.append((time.monotonic() - t0, error.code()))

        os.kill(triton.pid, signal.SIGSTOP)  # Triton accepts connections but never answers: a slow dependency
        try:
            threads = [threading.Thread(target=call) for _ in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=10)
            codes = {code for _, code in results}
            assert len(results) == 12 and codes <= {grpc.StatusCode.DEADLINE_EXCEEDED,
                                                    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}
            assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes  # excess load is refused, not queued without limit
            assert max(seconds for seconds, _ in results) < 1.5  # every deadline honoured
            assert gateway.pipeline.recommend_queue.depth() <= 3
            down = wait_for(lambda: status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=6)
            assert down is not None
        finally:
            os.kill(triton.pid, signal.SIGCONT)
        up = wait_for(lambda: status(channel) == health_pb2.HealthCheckResponse.SERVING, timeout=10)
        assert up is not None and up < 5.0
        assert len(stub.Recommend(pb.RecommendRequest(history=["i2", "i4"], k=5), timeout=10).items) == 5


# ---------------------------------------------------------------------------------------------- managed Triton
def managed_values(deployment, index: Path, **triton) -> dict:
    """A gateway that starts the bundled Triton itself (triton.url null) with a metrics endpoint on a free port."""
    return {"port": 0, "metrics_port": 0, "model_repository": str(deployment.repository), "index": str(index),
            "health_interval_s": 0.2, "triton": {"startup_timeout_s": 90.0, **triton}}


def scrape(port: int, name: str) -> float:
    """One unlabelled sample of the gateway's /metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def serving_port(port: int) -> list[int]:
    """PIDs of tritonserver processes started with this gRPC port (none must outlive their gateway)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"tritonserver") and f"--grpc-port={port}".encode() in argv:
                pids.append(int(entry.name))
    return pids


def recommend_until_ok(stub, request, deadline: float, timeout: float) -> tuple[list, object | None]:
    """Recommend calls in a loop until one succeeds (or `timeout`): [(seconds, code)] of the failures, the answer."""
    failures = []
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        try:
            return failures, stub.Recommend(request, timeout=deadline)
        except grpc.RpcError as error:
            failures.append((time.monotonic() - t0, error.code()))
        time.sleep(0.05)
    return failures, None


def test_gateway_restarts_the_triton_it_started_after_kill_9(deployment, index_copy):
    request = pb.RecommendRequest(history=["i2", "i4", "i6"], k=5)
    deadline = 2.0
    # backoff 1 s: an outage long enough to be seen by the calls below, and still a quick recovery
    config = config_from_dict(managed_values(deployment, index_copy, restart_backoff_s=1.0))
    with Gateway(config) as gateway, grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        assert status(channel) == health_pb2.HealthCheckResponse.SERVING
        before = stub.Recommend(request, timeout=10)
        assert len(before.items) == 5
        assert scrape(gateway.metrics_port, "llmrec_gateway_triton_restarts_total") == 0
        first_pid, ports = gateway.triton.pid, dict(gateway.triton.ports)

        killed = time.monotonic()
        os.kill(first_pid, signal.SIGKILL)  # the tritonserver process alone, as the OOM killer would
        failures, after = recommend_until_ok(stub, request, deadline, timeout=60)
        recovered = time.monotonic() - killed
        assert after is not None, f"no successful Recommend within 60 s of the kill: {failures[-3:]}"
        assert failures, "no call hit the outage"
        assert {code for _, code in failures} == {grpc.StatusCode.UNAVAILABLE}, failures
        assert max(seconds for seconds, _ in failures) < deadline, "a call hung during the outage"
        assert sorted(s for s, _ in failures)[len(failures) // 2] < 0.2  # fail fast: the median is immediate
        up = wait_for(lambda: status(channel) == health_pb2.HealthCheckResponse.SERVING, timeout=60)
        assert up is not None

        assert [i.id for i in after.items] == [i.id for i in before.items]  # the same answer as before
        assert np.allclose([i.score for i in after.items], [i.score for i in before.items], atol=1e-5)
        assert gateway.triton.pid != first_pid and not alive(first_pid)
        assert gateway.triton.ports == ports  # same ports: the gateway's channel reconnected to the same address
        # the supervisor counts the restart once its own readiness poll sees the new server: the gateway's HTTP
        # calls (a fresh connection after a failure) may get through a moment before that
        assert wait_for(lambda: scrape(gateway.metrics_port, "llmrec_gateway_triton_restarts_total") == 1,
                        timeout=10) is not None
        assert scrape(gateway.metrics_port, "llmrec_gateway_triton_exits_total") == 1
        assert scrape(gateway.metrics_port, "llmrec_gateway_triton_restart_gave_up") == 0
        print(f"\nmanaged Triton kill -9 -> first OK Recommend {recovered:.2f} s "
              f"({len(failures)} calls UNAVAILABLE meanwhile); death noticed -> ready again "
              f"{gateway.supervisor.last_downtime_s:.2f} s")
        second_pid, supervisor = gateway.triton.pid, gateway.supervisor
    # a clean gateway shutdown stops that Triton and never restarts it
    assert not alive(second_pid) and not supervisor.is_alive()
    time.sleep(1.0)
    assert serving_port(ports["grpc"]) == [] and supervisor.restarts == 1 and supervisor.exits == 1


def test_managed_triton_restart_budget_spent_stays_not_serving(deployment, index_copy, caplog):
    config = config_from_dict(managed_values(deployment, index_copy, max_restarts=1, restart_backoff_s=0.2))
    request = pb.RecommendRequest(history=["i2", "i4"], k=5)
    with caplog.at_level(logging.INFO, logger="llmrec"), Gateway(config) as gateway, \
            grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        os.kill(gateway.triton.pid, signal.SIGKILL)  # first death: restarted (the whole budget)
        _, answer = recommend_until_ok(stub, request, 2.0, timeout=60)
        # counted once the supervisor's own readiness poll sees the new server (HTTP calls may get through first)
        assert answer is not None and wait_for(lambda: gateway.supervisor.restarts == 1, timeout=10) is not None
        ports = dict(gateway.triton.ports)
        os.kill(gateway.triton.pid, signal.SIGKILL)  # second death within the window: give up
        assert wait_for(lambda: gateway.supervisor.gave_up, timeout=10) is not None
        assert wait_for(lambda: status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=5) is not None
        time.sleep(1.5)  # longer than the next backoff (0.4 s) + a start: nothing comes back
        assert status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert serving_port(ports["grpc"]) == [] and gateway.triton.pid is None
        with pytest.raises(grpc.RpcError) as refused:
            stub.Recommend(request, timeout=2.0)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert scrape(gateway.metrics_port, "llmrec_gateway_triton_restart_gave_up") == 1
        assert scrape(gateway.metrics_port, "llmrec_gateway_triton_restarts_total") == 1
        assert scrape(gateway.metrics_port, "llmrec_gateway_triton_exits_total") == 2
    exited = [r for r in caplog.records if r.name == "llmrec.triton" and r.getMessage() == "triton_exited"]
    assert len(exited) == 2 and all(r.exit_code == -9 and r.uptime_s > 0 for r in exited)
    gave_up = [r for r in caplog.records if r.levelno == logging.ERROR and r.getMessage() == "triton_restart_gave_up"]
    assert len(gave_up) == 1
