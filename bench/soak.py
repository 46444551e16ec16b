"""Soak with faults: a mixed gRPC workload on a real Triton + gateway while the dependencies are broken on purpose.

    python bench/soak.py --duration 600                 # the full run (~12 min with restarts)
    python bench/soak.py --duration 60 --clients 3      # smoke run
    python bench/soak.py --duration 20 --clients 2 --out /tmp/soak-smoke   # results elsewhere than bench/results

Deployment: a Triton model repository and an index snapshot (default: the
load benchmark's MovieLens-100k deployment, runs/bench/deployment/, built by
bench/serving_load.py). The index is copied into a work folder first, so
nothing of the deployment is modified. Triton (serving.triton.TritonServer)
and the gateway (`python -m serving gateway`, a child process with
`persist: true`, so its writes go through the write-ahead log) run on free
loopback ports, kept across restarts. From 0.65 on, the gateway starts and
supervises Triton itself (`triton.url: null`), as a single-process deployment would.

Workload: `--clients` threads, closed loop, each call with a 2 s deadline:
Recommend (real ml-100k item ids, k=10) 70 %, UpsertItems 20 % (ids of the
client's own range, re-upserted with a new title each time), DeleteItems
10 % (of the client's own acknowledged items). Each client remembers, per id,
the last acknowledged state (title or deleted) and the call in flight.

Fault schedule (times as fractions of --duration of load):
  0.20  Triton (started by this script) killed with SIGKILL; restarted 3 s later on the same ports
        (recovery = Triton ready -> first successful Recommend)
  0.50  the gateway killed with SIGKILL while upserts are in flight, restarted at once
        (recovery = kill -> first successful Recommend through the new process)
  0.65  the gateway stopped cleanly and started again managing its own Triton (the script's Triton is
        stopped); not a fault, a change of deployment
  0.80  the gateway-managed Triton killed with SIGKILL; nobody but the gateway's supervisor restarts it
        (recovery = kill -> first successful Recommend; the gateway's llmrec_gateway_triton_restarts_total
        must read 1, and its log gives the death -> ready time of the restart)
  end   the gateway stopped cleanly (compaction; its Triton must be stopped, not restarted) and
        started again: every acknowledged write is checked with GetItems (found must equal acknowledged);
        then a copy of the state folder with its newest snapshot corrupted is served
        by another gateway: it must refuse that snapshot, fall back to the previous
        one (+ the log) and hold the same catalogue.
Peak memory = VmHWM of each gateway process and of Triton (from /proc).
Writes bench/results/soak.{json,md} (--name for another stem, --out for another folder).
"""

from __future__ import annotations

import argparse
import json
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
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import environment, write_result  # noqa: E402
from serving.proto.llmrec.v2 import recommend_pb2 as pb  # noqa: E402
from serving.proto.llmrec.v2 import recommend_pb2_grpc as pb_grpc  # noqa: E402
from serving.triton import TritonServer, free_port  # noqa: E402

DEADLINE = 2.0  # default of --deadline


def alive(pid: int | None) -> bool:
    """The process exists and is not a zombie."""
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def child_pids(parent: int, name: str) -> list[int]:
    """PIDs of the live children of `parent` whose command name is `name` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm, rest = entry.joinpath("stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        if comm.split("(", 1)[-1] == name and int(fields[1]) == parent and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def scrape(port: int, name: str) -> float | None:
    """One unlabelled sample of a gateway's /metrics endpoint (None when unreachable or absent)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def log_events(path: Path, *names: str) -> list[dict[str, Any]]:
    """The structured records of a gateway's log (JSON lines) whose event is one of `names`."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") in names:
            events.append(record)
    return events


def peak_rss_mib(pid: int | None) -> float | None:
    """VmHWM (peak resident set) of a live process, MiB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class GatewayChild:
    """The gateway as a child process on a fixed port (so clients keep their address across a restart)."""

    def __init__(self, config: dict[str, Any], folder: Path) -> None:
        self.config, self.folder = config, folder
        self.process: subprocess.Popen | None = None
        self.peak_mib = 0.0
        self.starts = 0
        self.ready: dict[str, Any] = {}  # its gateway_ready line (metrics_port, triton_pid)

    def start(self) -> float:
        self.starts += 1
        path = self.folder / f"gateway-{self.starts}.yaml"
        path.write_text(json.dumps(self.config))  # JSON is YAML
        log = (self.folder / f"gateway-{self.starts}.log").open("w")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        t0 = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "serving", "gateway", "--config", str(path), "--quiet"],
                                        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the gateway did not start; see {log.name}")
        self.ready = json.loads(line)
        return time.monotonic() - t0

    @property
    def log_path(self) -> Path:
        return self.folder / f"gateway-{self.starts}.log"

    def triton_pid(self) -> int | None:
        """The tritonserver this gateway started and supervises (None with an external Triton)."""
        if self.process is None or self.process.poll() is not None:
            return None
        pids = child_pids(self.process.pid, "tritonserver")
        return pids[0] if pids else None

    def sample(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.peak_mib = max(self.peak_mib, peak_rss_mib(self.process.pid) or 0.0)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.sample()
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.sample()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


class Client(threading.Thread):
    def __init__(self, number: int, address: str, histories: list[list[int]], stop: threading.Event,
                 seed: int, deadline: float) -> None:
        super().__init__(daemon=True, name=f"soak-client-{number}")
        self.deadline = deadline
        self.number, self.address, self.histories, self.stop_event = number, address, histories, stop
        self.rng = random.Random(seed)
        self.codes: Counter[tuple[str, str]] = Counter()
        self.acked: dict[str, str | None] = {}  # catalogue id -> last acknowledged title, None = deleted
        self.in_flight: set[str] = set()  # ids of the write being sent
        self.uncertain: set[str] = set()  # ids whose last write got no answer (it may or may not have happened)
        self.acked_writes = 0
        self.ok_times: list[float] = []  # monotonic times of successful Recommend calls

    def run(self) -> None:
        channel = grpc.insecure_channel(self.address)
        stub = pb_grpc.RecommenderStub(channel)
        n = 0
        while not self.stop_event.is_set():
            n += 1
            roll = self.rng.random()
            live = [i for i, t in self.acked.items() if t is not None]
            if roll < 0.7:
                method, ids = "Recommend", []
                request: Any = pb.RecommendRequest(history=self.rng.choice(self.histories), k=10,
                                                   exclude_history=True)
            elif roll < 0.9 or not live:
                method = "UpsertItems"
                ids = [f"soak-{self.number}-{self.rng.randrange(200)}"]
                title = f"soak item {ids[0]} call {n} of client {self.number}"
                request = pb.UpsertItemsRequest(items=[pb.ItemUpsert(id=ids[0], title=title)])
            else:
                method, ids = "DeleteItems", [self.rng.choice(live)]
                request = pb.DeleteItemsRequest(ids=ids)
            self.in_flight = set(ids)
            t0 = time.monotonic()
            try:
                getattr(stub, method)(request, timeout=self.deadline)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            self.codes[(method, code)] += 1
            if code == "OK":
                if method == "Recommend":
                    self.ok_times.append(t0)  # when the call was sent: recovery counts from a call sent after
                elif method == "UpsertItems":
                    self.acked[ids[0]] = request.items[0].title
                    self.acked_writes += 1
                else:
                    self.acked[ids[0]] = None
                    self.acked_writes += 1
                self.uncertain -= set(ids)  # a later acknowledged write settles the id again
                self.in_flight = set()
            elif code in ("INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED"):
                self.in_flight = set()  # refused before anything was written
            else:  # UNAVAILABLE / DEADLINE_EXCEEDED: a write may or may not have happened
                self.uncertain |= set(ids)
                self.in_flight = set()
                time.sleep(0.05)
        channel.close()

    def settled(self) -> dict[str, str | None]:
        """Ids whose last write was acknowledged: their state after recovery must be exactly that."""
        return {i: t for i, t in self.acked.items() if i not in self.uncertain}


def check_writes(address: str, clients: list[Client]) -> dict[str, int]:
    """GetItems of every id with a settled acknowledged state: found must equal acknowledged."""
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.RecommenderStub(channel)
    expected: dict[str, str | None] = {}
    for client in clients:
        expected.update(client.settled())
    ids = sorted(expected)
    found = 0
    for start in range(0, len(ids), 200):
        chunk = ids[start:start + 200]
        reply = stub.GetItems(pb.GetItemsRequest(ids=chunk), timeout=30)
        titles = {item.id: item.title for item in reply.items}
        found += sum(titles.get(i) == expected[i] for i in chunk)
    size = stub.DeleteItems(pb.DeleteItemsRequest(ids=["no such item"]), timeout=30).index_size
    channel.close()
    return {"ids_checked": len(ids), "ids_as_acknowledged": found, "index_size": int(size)}


def wait_ok(clients: list[Client], after: float, timeout: float) -> float | None:
    """Seconds from `after` to the first successful Recommend that started after it."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        times = [t for c in clients for t in c.ok_times if t > after]
        if times:
            return round(min(times) - after, 3)
        time.sleep(0.05)
    return None


def histories_from(index: Path, count: int, seed: int) -> list[list[str]]:
    """Random histories of the catalogue ids in the store."""
    store = json.loads((index / "store.json").read_text())
    ids = [str(item.get("key") or item["id"]) for item in store["items"]]
    rng = random.Random(seed)
    return [rng.sample(ids, rng.randint(1, 20)) for _ in range(count)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="llmrec-soak-"))
    index = work / "index"
    shutil.copytree(args.index, index)
    port = free_port()
    triton = TritonServer(args.repository, exit_timeout=5, startup_timeout=600)
    gateway = None
    events: list[dict[str, Any]] = []
    clients: list[Client] = []
    stop = threading.Event()
    triton_peaks: list[float] = [0.0]
    managed_pids: set[int] = set()  # every Triton a gateway started (none may outlive the script)
    t_start = time.monotonic()

    def note(event: str, **fields: Any) -> None:
        events.append({"t": round(time.monotonic() - t_start, 2), "event": event, **fields})
        print(json.dumps(events[-1]), flush=True)

    try:
        triton.start()
        note("triton_started", pid=triton.pid)
        config = {"port": port, "metrics_port": None, "model_repository": str(Path(args.repository).resolve()),
                  "index": str(index), "persist": True, "compact_every": args.compact_every,
                  "health_interval_s": 0.5, "triton": {"url": triton.grpc_url, "timeout_s": 5.0},
                  "batching": {"max_queue": 256}}
        gateway = GatewayChild(config, work)
        note("gateway_started", seconds=round(gateway.start(), 2))
        histories = histories_from(index, 500, args.seed)
        address = f"127.0.0.1:{port}"
        clients = [Client(k, address, histories, stop, args.seed + k, args.deadline) for k in range(args.clients)]
        for client in clients:
            client.start()
        load_start = time.monotonic()
        paused = [0.0]  # time spent restarting things: the schedule counts load time only

        def until(fraction: float) -> None:
            while time.monotonic() - load_start - paused[0] < fraction * args.duration:
                gateway.sample()
                triton_peaks.append(peak_rss_mib(triton.pid or gateway.triton_pid()) or 0.0)
                time.sleep(0.2)

        until(0.2)
        note("triton_kill")
        t_fault = time.monotonic()
        triton.kill()
        time.sleep(3.0)
        triton.restart()
        ready = time.monotonic()
        paused[0] += ready - t_fault - 3.0
        note("triton_ready", pid=triton.pid)
        triton_recovery = wait_ok(clients, ready, 60)
        note("triton_recovered", seconds=triton_recovery)
        until(0.5)
        t_wait = time.monotonic()  # kill while an upsert or delete is on the wire (up to 10 s of waiting)
        while time.monotonic() - t_wait < 10 and not any(c.in_flight for c in clients):
            time.sleep(0.001)
        killed = time.monotonic()
        note("gateway_kill", writes_in_flight=sum(bool(c.in_flight) for c in clients))
        gateway.kill()
        restarted_in = gateway.start()
        paused[0] += restarted_in
        note("gateway_restarted", seconds=round(restarted_in, 2))
        gateway_recovery = wait_ok(clients, killed, 120)
        note("gateway_recovered", seconds=gateway_recovery)
        until(0.65)
        # from here on the gateway starts and supervises Triton itself: restart it cleanly in that mode
        t_switch = time.monotonic()
        note("switch_to_managed_triton")
        gateway.stop()
        triton_peaks.append(peak_rss_mib(triton.pid) or 0.0)
        triton.stop()
        config = {**config, "metrics_port": 0,
                  "triton": {"url": None, "timeout_s": 5.0, "startup_timeout_s": 600.0, "restart_backoff_s": 0.5}}
        gateway.config = config
        switch_s = gateway.start()
        managed_pids.add(gateway.ready["triton_pid"])
        paused[0] += time.monotonic() - t_switch
        note("gateway_managing_triton", seconds=round(switch_s, 2), triton_pid=gateway.ready["triton_pid"],
             metrics_port=gateway.ready["metrics_port"])
        until(0.8)
        victim = gateway.triton_pid() or gateway.ready["triton_pid"]
        note("managed_triton_kill", pid=victim)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)  # the tritonserver alone, as the OOM killer would; the gateway must act
        managed_recovery = wait_ok(clients, killed, 120)
        restarted = log_events(gateway.log_path, "triton_restarted")
        managed_pids.add(gateway.triton_pid())
        managed = {"kill_to_first_ok_s": managed_recovery,
                   "restarts_metric": scrape(gateway.ready["metrics_port"], "llmrec_gateway_triton_restarts_total"),
                   "exits_metric": scrape(gateway.ready["metrics_port"], "llmrec_gateway_triton_exits_total"),
                   "death_to_ready_s": restarted[-1].get("downtime_s") if restarted else None,
                   "start_s": restarted[-1].get("seconds") if restarted else None,
                   "exit": next(iter(log_events(gateway.log_path, "triton_exited")), None),
                   "new_pid": gateway.triton_pid(), "killed_pid": victim}
        note("managed_triton_recovered", **{k: v for k, v in managed.items() if k != "exit"})
        until(1.0)
        stop.set()
        for client in clients:
            client.join(timeout=args.deadline + 10)
        load_seconds = time.monotonic() - load_start
        note("load_stopped")
        managed_pid = gateway.triton_pid()
        gateway.stop()  # clean: compacts the log into a snapshot, stops its Triton (which must not come back)
        time.sleep(1.0)
        managed["left_running_after_clean_stop"] = alive(managed_pid)
        note("clean_stop", triton_pid=managed_pid, triton_left_running=managed["left_running_after_clean_stop"])
        restart_s = gateway.start()
        managed_pids.add(gateway.ready["triton_pid"])
        after_restart = check_writes(address, clients)
        note("restart_checked", seconds=round(restart_s, 2), **after_restart)
        # a copy of the state with its newest snapshot corrupted: the previous snapshot + the log must serve it
        # (one more write + compaction first, so that there are two snapshots and the log between them)
        probe = pb_grpc.RecommenderStub(grpc.insecure_channel(address))
        probe.UpsertItems(pb.UpsertItemsRequest(items=[pb.ItemUpsert(id="soak-probe", title="soak probe item")]),
                          timeout=30)
        gateway.stop()
        state = index.with_name("index-state")
        copy = work / "copy"
        shutil.copytree(index, copy / "index")
        shutil.copytree(state, copy / "index-state")
        snapshots = sorted((copy / "index-state").glob("snapshot-*"))
        vectors = snapshots[-1] / "vectors.npy"
        data = bytearray(vectors.read_bytes())
        data[-1] ^= 0xFF
        vectors.write_bytes(bytes(data))
        note("snapshot_corrupted", snapshot=snapshots[-1].name, snapshots=len(snapshots))
        corrupt = GatewayChild({**config, "index": str(copy / "index")}, work)
        corrupt.starts = 10
        corrupt.start()
        managed_pids.add(corrupt.ready["triton_pid"])
        after_corruption = check_writes(address, clients)
        log_text = (work / "gateway-11.log").read_text()
        fell_back = "snapshot refused" in log_text
        note("corrupt_snapshot_checked", fell_back=fell_back, **after_corruption)
        corrupt.stop()
        triton_peak = max(triton_peaks + [peak_rss_mib(triton.pid) or 0.0])
    finally:
        stop.set()
        if gateway is not None:
            gateway.stop()
        triton.stop()
        for pid in managed_pids:  # a gateway that could not stop its Triton: not left behind (started by us)
            if alive(pid):
                note("triton_left_behind", pid=pid)
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)

    codes: Counter[tuple[str, str]] = Counter()
    for client in clients:
        codes.update(client.codes)
    by_code: Counter[str] = Counter()
    for (_, code), count in codes.items():
        by_code[code] += count
    sent = sum(codes.values())
    return {
        "settings": {"duration_s": args.duration, "clients": args.clients, "deadline_s": args.deadline,
                     "compact_every": args.compact_every, "repository": str(args.repository),
                     "index": str(args.index), "seed": args.seed},
        "load_seconds": round(load_seconds, 1),
        "requests_sent": sent,
        "succeeded": by_code.get("OK", 0),
        "failed_by_code": {code: n for code, n in sorted(by_code.items()) if code != "OK"},
        "by_method": {f"{m} {c}": n for (m, c), n in sorted(codes.items())},
        "acknowledged_writes": sum(c.acked_writes for c in clients),
        "after_restart": after_restart,
        "after_corrupt_snapshot": {**after_corruption, "fell_back_to_previous_snapshot": fell_back},
        "recovery_s": {"triton_restart": triton_recovery, "gateway_kill9": gateway_recovery,
                       "managed_triton_kill9": managed_recovery,
                       "gateway_start_after_clean_stop": round(restart_s, 2)},
        "managed_triton": managed,
        "peak_memory_mib": {"gateway": gateway.peak_mib if gateway else None, "triton": triton_peak},
        "events": events,
    }


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def markdown(result: dict[str, Any]) -> str:
    r, s, m = result, result["settings"], result["managed_triton"]
    lost = r["after_restart"]["ids_checked"] - r["after_restart"]["ids_as_acknowledged"]
    corrupt = r["after_corrupt_snapshot"]
    lost_c = corrupt["ids_checked"] - corrupt["ids_as_acknowledged"]
    rows = [
        ("load", f"{r['load_seconds']} s wall ({s['duration_s']} s of load + restarts), {s['clients']} clients, "
                 f"deadline {s['deadline_s']} s, compaction every {s['compact_every']} writes"),
        ("deployment", f"{s['repository']}"),
        ("requests sent", r["requests_sent"]),
        ("succeeded", r["succeeded"]),
        ("failed, by status", ", ".join(f"{k} {v}" for k, v in r["failed_by_code"].items()) or "none"),
        ("acknowledged writes (upsert + delete calls)", r["acknowledged_writes"]),
        ("ids checked after kill -9 + clean restart / found as acknowledged",
         f"{r['after_restart']['ids_checked']} / {r['after_restart']['ids_as_acknowledged']} (lost {lost})"),
        ("same, served from a copy with its newest snapshot corrupted",
         f"{corrupt['ids_checked']} / {corrupt['ids_as_acknowledged']} "
         f"(lost {lost_c}; fell back to the previous snapshot: {corrupt['fell_back_to_previous_snapshot']})"),
        ("recovery after Triton kill -9 + restart (Triton ready -> first OK)",
         f"{r['recovery_s']['triton_restart']} s"),
        ("recovery after gateway kill -9 (kill -> first OK, includes the restart)",
         f"{r['recovery_s']['gateway_kill9']} s"),
        ("recovery after kill -9 of the gateway-managed Triton, restarted by the gateway (kill -> first OK)",
         f"{m['kill_to_first_ok_s']} s (the gateway's restart: death -> ready {m['death_to_ready_s']} s, "
         f"of which the start {m['start_s']} s; restarts metric {fmt(m['restarts_metric'])}, "
         f"Triton left running after the clean stop: {m['left_running_after_clean_stop']})"),
        ("peak memory (VmHWM)", f"gateway {r['peak_memory_mib']['gateway']} MiB, "
                                f"Triton {r['peak_memory_mib']['triton']} MiB"),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "Per method and status: " + ", ".join(f"{k}: {v}" for k, v in r["by_method"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (restarts add to it)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--deadline", type=float, default=DEADLINE, help="per-call deadline, seconds")
    parser.add_argument("--compact-every", type=int, default=50)
    parser.add_argument("--repository", default=str(ROOT / "runs/bench/deployment/model_repository"))
    parser.add_argument("--index", default=str(ROOT / "runs/bench/deployment/index"))
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--name", default="soak", help="stem of the result files (default soak)")
    parser.add_argument("--out", default=None,
                        help="folder for <name>.json and <name>.md (default bench/results; use another one for "
                             "smoke runs)")
    args = parser.parse_args(argv)
    result = run(args)
    if args.out is None:
        path = write_result(args.name, result)
    else:
        path = Path(args.out) / f"{args.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"environment": environment(), **result}, indent=2) + "\n")
    (path.with_suffix(".md")).write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    lost = result["after_restart"]["ids_checked"] != result["after_restart"]["ids_as_acknowledged"] or \
        result["after_corrupt_snapshot"]["ids_checked"] != result["after_corrupt_snapshot"]["ids_as_acknowledged"]
    managed = result["managed_triton"]
    supervised = managed["kill_to_first_ok_s"] is not None and managed["restarts_metric"] == 1 and \
        not managed["left_running_after_clean_stop"]
    return 1 if lost or not supervised else 0


if __name__ == "__main__":
    raise SystemExit(main())
