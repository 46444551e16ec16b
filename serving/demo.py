"""`python -m serving demo --requests FILE`: live recommendations from a real gateway, for `make demo`.

    python -m serving demo --requests runs/demo/data/sample-histories.json \\
        [--model-repository model_repository] [--index runs/demo/index] [--title "Toy Story 2"] [--record FILE]

Starts `python -m serving gateway` as a child process (which starts the Triton bundled in nvidia-pytriton on
the model repository) on free ports on 127.0.0.1, waits until its health check says SERVING, then:
  1. for every user of --requests (`python -m train data sample-histories` writes it: a JSON list of
     {"user": raw user id, "history": [item ids, oldest first]}) prints the last titles of the history and
     the top-k recommendations with their scores;
  2. adds a new item live (UpsertItems: its title is embedded by Triton's item_encoder), recommends after
     the first user's history extended by the new item (usable in histories at once), and shows where the
     new item ranks for a user who just watched the SIMILAR_HISTORY catalogue items nearest to it (cosine
     of the item vectors in the index snapshot): is it recommended to someone with that taste?
  3. deletes the new item again, prints the latency of every call, and stops the gateway (and so Triton)
     by PID, also when something failed; with --keep-serving only after Ctrl-C / SIGTERM, so that
     `python -m serving client` can be tried against the running stack.
Nothing permanent is written: the gateway config lives in a temporary folder and the gateway runs with
`persist: false`, so the index on disk is never modified. The one exception is --record FILE: a JSON
record of what happened (`RECORD_FORMAT`: every call with its method, latency and status, the
recommendations shown, the new item's rank, the wall time), written atomically once the gateway is
stopped, also when a call failed ("ok": false and the error); nothing is written for bad input.
`python -m train report --demo-record FILE` turns it into the serving table. The printed output is the
same with or without it. Exit codes: 0 done, 1 the gateway failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmrec.cli import HelpFormatter
from llmrec.files import write_json_atomic
from llmrec.itemtext import ItemText

from .gateway.backends import item_text_recipe
from .proto.llmrec.v2 import recommend_pb2 as pb
from .proto.llmrec.v2 import recommend_pb2_grpc as pb_grpc
from .signals import StopSignal

ROOT = Path(__file__).resolve().parents[1]  # the project folder: `python -m serving` runs from here
SERVICE = "llmrec.v2.Recommender"
NEW_TITLE = "Toy Story 2"  # a 1999 film: not in MovieLens-100k (1998 and before), Toy Story is; titles without year
NEW_GENRES = "Animation, Children's, Comedy"
NEW_YEAR = "1999"
RANK_DEPTH = 100  # how deep the new item's rank is looked for (the gateway's default max_k)
SIMILAR_HISTORY = 5  # the history of the user the new item is ranked for: its nearest catalogue items
STDERR_TAIL = 30  # gateway log lines kept to explain a failure
RECORD_FORMAT = "llmrec.demo-record/1"  # --record FILE (see build_record)


class DemoError(RuntimeError):
    """The gateway did not start or a call failed; the message says which (exit code 1)."""


class DemoInputError(ValueError):
    """A bad --requests file or folder (exit code 2)."""


@dataclass
class Timings:
    """Latency of every gRPC call the demo made, by method (milliseconds), and every call in order with its
    status (`log`: {"method", "ms", "ok", "status"}; status is the gRPC code name, "OK" when it succeeded)."""

    calls: dict[str, list[float]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)

    def call(self, name: str, method: Any, request: Any, timeout: float) -> Any:
        start = time.perf_counter()
        status = "OK"
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as error:
            code = error.code() if callable(getattr(error, "code", None)) else None
            status = code.name if code is not None else "UNKNOWN"
            raise
        except BaseException as error:  # not a gRPC status (e.g. interrupted): still recorded as failed
            status = type(error).__name__
            raise
        finally:
            ms = (time.perf_counter() - start) * 1000
            self.calls.setdefault(name, []).append(ms)
            self.log.append({"method": name, "ms": round(ms, 3), "ok": status == "OK", "status": status})

    def lines(self) -> list[str]:
        rows = [f"  {'call':<12} {'n':>3} {'mean ms':>9} {'min ms':>8} {'max ms':>8}"]
        for name, values in self.calls.items():
            rows.append(f"  {name:<12} {len(values):>3} {np.mean(values):>9.1f} {min(values):>8.1f} "
                        f"{max(values):>8.1f}")
        return rows


# ---------------------------------------------------------------------------------------------- gateway process
@dataclass
class GatewayProcess:
    """The gateway child process, its address, and Triton's PID (read from the gateway's log)."""

    process: subprocess.Popen
    address: str = ""
    triton_pid: int | None = None
    stderr_tail: deque = field(default_factory=lambda: deque(maxlen=STDERR_TAIL))
    stdout: queue.Queue = field(default_factory=queue.Queue)

    def _read_stderr(self) -> None:
        """Drain the log (a full pipe would block the gateway); remember Triton's PID and the last lines."""
        for line in self.process.stderr:
            self.stderr_tail.append(line.rstrip())
            if '"triton_ready"' in line:
                try:
                    self.triton_pid = int(json.loads(line)["pid"])
                except (ValueError, KeyError, TypeError):
                    pass

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            self.stdout.put(line)

    def start_readers(self) -> None:
        for target in (self._read_stderr, self._read_stdout):
            threading.Thread(target=target, daemon=True).start()

    def failure(self, what: str) -> DemoError:
        errors = [line for line in self.stderr_tail if line.startswith("error:") or '"ERROR"' in line]
        return DemoError(f"{what}; the gateway's last log lines:\n  " + "\n  ".join(errors or self.stderr_tail))

    def wait_ready(self, timeout: float) -> None:
        """Until the gateway prints its `gateway_ready` line (Triton started, models loaded, port open)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the reader thread take the last log lines
                raise self.failure(f"the gateway exited with code {self.process.returncode} while starting")
            try:
                line = self.stdout.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "gateway_ready":
                self.address = event["address"]
                return
        raise self.failure(f"the gateway was not ready after {timeout:.0f} s")

    def stop(self, timeout: float = 60.0) -> str:
        """SIGTERM (the gateway then stops Triton gracefully); SIGKILL of both only if that hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.triton_pid is not None and _alive(self.triton_pid):
            try:  # Triton leads its own process group (its Python stubs are in it)
                os.killpg(self.triton_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        triton = "" if self.triton_pid is None else (
            f", Triton pid {self.triton_pid} {'still running' if _alive(self.triton_pid) else 'gone'}")
        return f"gateway pid {self.process.pid} stopped (exit code {self.process.returncode}){triton}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_config(folder: Path, model_repository: Path, index: Path, triton_url: str | None,
                 startup_timeout: float) -> Path:
    """The gateway's YAML: free port, no metrics endpoint, nothing persisted (the index is read only)."""
    path = folder / "serving.yaml"
    path.write_text(
        "host: 127.0.0.1\nport: 0\nmetrics_port: null\ngrpc_workers: 4\n"
        f"model_repository: {json.dumps(str(model_repository.resolve()))}\n"
        f"index: {json.dumps(str(index.resolve()))}\n"
        "persist: false\nhealth_interval_s: 0.5\n"
        f"triton:\n  url: {json.dumps(triton_url)}\n  startup_timeout_s: {startup_timeout}\n")
    return path


def stop_with_parent() -> None:
    """In the gateway child before exec (Linux): SIGTERM it when the demo dies, even by SIGKILL, so that a
    killed demo never leaves a gateway and its Triton running. The demo starts it from its main thread, which
    lives as long as the demo (the signal follows the thread that forked)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def start_gateway(config: Path) -> GatewayProcess:
    """Start `python -m serving gateway` (not yet ready: see `GatewayProcess.wait_ready`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-m", "serving", "gateway", "--config", str(config)], cwd=ROOT,
                               env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=stop_with_parent)
    gateway = GatewayProcess(process)
    gateway.start_readers()
    return gateway


def wait_serving(channel: grpc.Channel, timeout: float) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2).status
        except grpc.RpcError:
            status = None
        if status == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.2)
    raise DemoError(f"health of {SERVICE} is {status} after {timeout:.0f} s, not SERVING")


# ---------------------------------------------------------------------------------------------- the calls
def read_requests(path: Path) -> list[dict[str, Any]]:
    """[{"user": str, "history": [str, ...]}, ...] (catalogue item ids) from --requests; DemoInputError naming
    what is wrong."""
    try:
        requests = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DemoInputError(f"--requests {path}: {exc}") from None
    if not isinstance(requests, list) or not requests:
        raise DemoInputError(f"--requests {path}: expected a non-empty JSON list of {{user, history}}")
    for entry in requests:
        history = entry.get("history") if isinstance(entry, dict) else None
        if not isinstance(history, list) or not history or not all(isinstance(i, str) and i for i in history):
            raise DemoInputError(f"--requests {path}: every entry needs a non-empty list of catalogue item ids "
                                 f"(strings) as 'history', got {entry!r:.80}")
    return requests


def nearest_items(index_dir: Path, vector: np.ndarray, n: int) -> list[str]:
    """The catalogue ids of the `n` items (index snapshot on disk) whose vectors have the highest cosine with
    `vector`, nearest last (a history is oldest first: the most similar item is the one just watched)."""
    from .index import ItemIndex, ItemStore  # FAISS loads only here

    index = ItemIndex.load(index_dir, use_gpu=False)
    ids = index.ids()
    table = index.vectors(ids)
    cosine = table @ vector / (np.linalg.norm(table, axis=1) * np.linalg.norm(vector) + 1e-12)
    rows = [int(ids[i]) for i in np.argsort(-cosine, kind="stable")[:n]][::-1]
    return [item.key for item in ItemStore.load(index_dir).get(rows)]


def scored(items: list[pb.ScoredItem]) -> list[dict[str, Any]]:
    """Ranked items as they are recorded: rank (1 = first), id, title, score."""
    return [{"rank": rank, "id": item.id, "title": item.title, "score": float(item.score)}
            for rank, item in enumerate(items, 1)]


class Demo:
    """The scripted calls against a running gateway; every call is timed, what was shown is kept in `shown`."""

    def __init__(self, channel: grpc.Channel, k: int, last: int, timeout: float = 60.0) -> None:
        self.stub = pb_grpc.RecommenderStub(channel)
        self.k, self.last, self.timeout = k, last, timeout
        self.timings = Timings()
        self.shown: dict[str, Any] = {"users": [], "new_item": None}

    def titles(self, ids: list[str]) -> dict[str, str]:
        response = self.timings.call("GetItems", self.stub.GetItems, pb.GetItemsRequest(ids=sorted(set(ids))),
                                     self.timeout)
        return {item.id: item.title for item in response.items}

    def recommend(self, history: list[str], k: int) -> list[pb.ScoredItem]:
        request = pb.RecommendRequest(history=history, k=k, exclude_history=True)
        return list(self.timings.call("Recommend", self.stub.Recommend, request, self.timeout).items)

    def show(self, items: list[pb.ScoredItem], mark: str | None = None) -> None:
        for rank, item in enumerate(items, 1):
            star = "  <- the new item" if item.id == mark else ""
            print(f"    {rank:>2}. {item.title:<55.55} {item.score:8.3f}{star}")

    def user(self, entry: dict[str, Any]) -> None:
        history = entry["history"]
        recent = history[-self.last:]
        shown: dict[str, Any] = {"user": str(entry.get("user", "?")), "history_length": len(history),
                                 "history_ids": list(history), "recent": [], "recommendations": None}
        self.shown["users"].append(shown)
        names = self.titles(recent)
        shown["recent"] = [{"id": item, "title": names.get(item)} for item in recent]
        print(f"\nuser {entry.get('user', '?')}: {len(history)} items watched, the last {len(recent)}:")
        for item in recent:
            print(f"      {names.get(item, f'(id {item})')}")
        print(f"  top-{self.k} recommendations (score = inner product of user and item vectors):")
        items = self.recommend(history, self.k)
        shown["recommendations"] = scored(items)
        self.show(items)

    def new_item(self, history: list[str], user: str, title: str, attributes: dict[str, str], index_dir: Path,
                 recipe: ItemText | None) -> None:
        genres = attributes.get("genres", "")
        print(f'\nnew item, added live: "{title}" ({", ".join(v for v in attributes.values() if v)})')
        shown: dict[str, Any] = {"title": title, "genres": genres, "user": user, "id": None, "index_size": None,
                                 "recommendations_with_new_item": None, "nearest": None, "similar_history": None,
                                 "rank": None,
                                 "rank_depth": RANK_DEPTH, "candidates_ranked": None, "ranked_with_nearest": None,
                                 "deleted": None, "index_size_after_delete": None, "missing_after_delete": None}
        self.shown["new_item"] = shown
        # the text UpsertItems embeds: the served recipe over the title and attributes (llmrec.json)
        text = recipe.format(title, attributes) if recipe is not None else title
        shown["text"] = text
        embedded = self.timings.call("EmbedItems", self.stub.EmbedItems, pb.EmbedItemsRequest(texts=[text]),
                                     self.timeout)
        vector = np.asarray(embedded.vectors[0].values, dtype=np.float32)
        upsert = pb.UpsertItemsRequest(items=[pb.ItemUpsert(title=title, attributes=attributes)])
        response = self.timings.call("UpsertItems", self.stub.UpsertItems, upsert, self.timeout)
        new_id = response.ids[0]
        shown.update(id=new_id, index_size=int(response.index_size))
        print(f"  UpsertItems -> id {new_id}, the index holds {response.index_size} items")
        try:
            print(f"  user {user}'s history + the new item -> top-{self.k}:")
            items = self.recommend(history + [new_id], self.k)
            shown["recommendations_with_new_item"] = scored(items)
            self.show(items)
            similar = nearest_items(index_dir, vector, SIMILAR_HISTORY)
            names = self.titles(similar)
            shown["nearest"] = {"id": similar[-1], "title": names.get(similar[-1], f"id {similar[-1]}")}
            shown["similar_history"] = [{"id": i, "title": names.get(i, f"id {i}")} for i in similar]
            ranked = self.recommend(similar, RANK_DEPTH)
            ranks = [rank for rank, item in enumerate(ranked, 1) if item.id == new_id]
            shown.update(rank=ranks[0] if ranks else None, ranked_with_nearest=scored(ranked[:self.k]),
                         candidates_ranked=len(ranked))
            where = f"ranks #{ranks[0]} of {response.index_size} items" if ranks else \
                f"is not in the top {RANK_DEPTH} of {response.index_size} items"
            print(f"  a user who just watched the {len(similar)} catalogue items nearest the new one (cosine of "
                  f"item vectors), nearest last: {'; '.join(names.get(i, f'id {i}') for i in similar)}")
            print(f"  -> the new item {where}; top-{self.k}:")
            self.show(ranked[:self.k], mark=new_id)
        finally:
            deleted = self.timings.call("DeleteItems", self.stub.DeleteItems, pb.DeleteItemsRequest(ids=[new_id]),
                                        self.timeout)
            gone = self.timings.call("GetItems", self.stub.GetItems, pb.GetItemsRequest(ids=[new_id]), self.timeout)
            shown.update(deleted=int(deleted.deleted), index_size_after_delete=int(deleted.index_size),
                         missing_after_delete=list(gone.missing_ids) == [new_id])
            print(f"  DeleteItems -> {deleted.deleted} deleted, the index holds {deleted.index_size} items; "
                  f"GetItems({new_id}) -> {'missing' if list(gone.missing_ids) == [new_id] else 'still there'}")


def build_record(args: argparse.Namespace, started_at: str, wall_seconds: float, startup: float | None,
                 gateway: GatewayProcess | None, stopped: str | None, demo: Demo | None,
                 failure: BaseException | None) -> dict[str, Any]:
    """What --record FILE holds (RECORD_FORMAT): the inputs, the gateway, every call in order with its latency
    and status, what was shown (users' recommendations, the new item and its rank), the wall time."""
    shown = demo.shown if demo is not None else {"users": [], "new_item": None}
    return {
        "format": RECORD_FORMAT,
        "ok": failure is None,
        "error": None if failure is None else (str(failure) or type(failure).__name__),
        "started": started_at,
        "wall_seconds": round(wall_seconds, 3),
        "startup_seconds": None if startup is None else round(startup, 3),
        "inputs": {"requests": str(args.requests), "model_repository": str(args.model_repository),
                   "index": str(args.index), "k": args.k, "title": args.title, "genres": args.genres,
                   "triton_url": args.triton_url},
        "gateway": None if gateway is None else {
            "address": gateway.address or None, "pid": gateway.process.pid, "triton_pid": gateway.triton_pid,
            "stopped": stopped},
        "calls": list(demo.timings.log) if demo is not None else [],
        "users": shown["users"],
        "new_item": shown["new_item"],
    }


def run_demo(args: argparse.Namespace) -> int:
    requests = read_requests(Path(args.requests))
    for name in ("model_repository", "index"):
        if not Path(getattr(args, name)).is_dir():
            raise DemoInputError(f"--{name.replace('_', '-')} {getattr(args, name)} is not a folder")
    record_path = Path(args.record) if getattr(args, "record", None) else None
    if record_path is not None:
        try:
            record_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DemoInputError(f"--record {record_path}: {exc}") from None
        if record_path.is_dir():
            raise DemoInputError(f"--record {record_path} is a folder, not a file")
    gateway, demo, startup, failure = None, None, None, None
    started = time.perf_counter()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="llmrec-demo-") as folder:
        config = write_config(Path(folder), Path(args.model_repository), Path(args.index), args.triton_url,
                              args.startup_timeout)
        try:
            print(f"starting the gateway ({'Triton at ' + args.triton_url if args.triton_url else 'and Triton'}) "
                  f"on {args.model_repository} ...", flush=True)
            gateway = start_gateway(config)  # assigned before waiting: `finally` stops it whatever happens
            gateway.wait_ready(args.startup_timeout + 30)  # Triton's own start-up limit, plus loading the index
            with grpc.insecure_channel(gateway.address) as channel:
                wait_serving(channel, args.startup_timeout)
                startup = time.perf_counter() - started
                triton = f", Triton pid {gateway.triton_pid}" if gateway.triton_pid else ""
                print(f"gateway pid {gateway.process.pid} at {gateway.address}{triton}: SERVING after "
                      f"{startup:.1f} s")
                demo = Demo(channel, args.k, args.last)
                for entry in requests:
                    demo.user(entry)
                first = requests[0]
                attributes = {k: v for k, v in (("genres", args.genres), ("release year", args.year)) if v}
                demo.new_item(list(first["history"]), str(first.get("user", "?")), args.title, attributes,
                              Path(args.index), item_text_recipe(args.model_repository))
                print(f"\ntimings (start-up to SERVING {startup:.1f} s):")
                print("\n".join(demo.timings.lines()))
            if args.keep_serving:
                keep_serving(gateway)
        except grpc.RpcError as error:
            failure = DemoError(f"call failed: {error.code().name}: {error.details()}")
            raise failure from None
        except BaseException as error:
            failure = error
            raise
        finally:
            stopped = None
            if gateway is not None:
                stopped = gateway.stop()
                print(stopped, flush=True)
            if record_path is not None:
                record = build_record(args, started_at, time.perf_counter() - started, startup, gateway, stopped,
                                      demo, failure)
                try:
                    write_json_atomic(record_path, record)
                except OSError as exc:
                    if failure is None:  # the demo worked but its record is missing: make must notice
                        raise DemoError(f"cannot write --record {record_path}: {exc}") from None
                    print(f"error: cannot write --record {record_path}: {exc}", file=sys.stderr)
    return 0


def keep_serving(gateway: GatewayProcess) -> None:
    """Leave the stack up for the user's own calls until Ctrl-C / SIGTERM (or the gateway exits)."""
    print(f"\nstill serving on {gateway.address}; try\n"
          f"    python -m serving client --address {gateway.address} recommend --history 1,50,100 -k 5\n"
          "Ctrl-C stops the gateway and Triton.", flush=True)
    with StopSignal() as stop:  # SIGINT (Ctrl-C) and SIGTERM
        while not stop.is_set() and gateway.process.poll() is None:
            stop.wait(0.5)
    if gateway.process.poll() is not None:
        raise DemoError(f"the gateway exited by itself (code {gateway.process.returncode})")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `demo` subcommand on a `python -m serving` parser."""
    parser = subparsers.add_parser("demo", help="start the gateway, make live calls, stop it", description=__doc__,
                                   formatter_class=HelpFormatter)
    parser.add_argument("--requests", required=True,
                        help='JSON list of {"user": ..., "history": [item ids]} (python -m train data '
                             "sample-histories)")
    parser.add_argument("--model-repository", default="model_repository", help="Triton model repository")
    parser.add_argument("--index", default="runs/demo/index", help="item index snapshot (python -m export.index)")
    parser.add_argument("-k", "--k", type=int, default=10, help="recommendations per user")
    parser.add_argument("--last", type=int, default=5, help="history titles shown per user")
    parser.add_argument("--title", default=NEW_TITLE, help="title of the item added live (what is embedded)")
    parser.add_argument("--genres", default=NEW_GENRES, help="its genres (an attribute)")
    parser.add_argument("--year", default=NEW_YEAR, help="its release year (an attribute)")
    parser.add_argument("--triton-url", default=None, help="host:port of a running Triton (default: start one)")
    parser.add_argument("--startup-timeout", type=float, default=300.0,
                        help="seconds allowed for Triton to load the models")
    parser.add_argument("--keep-serving", action="store_true",
                        help="after the calls, keep the gateway and Triton up for your own calls until Ctrl-C")
    parser.add_argument("--record", default=None, metavar="FILE",
                        help="also write a JSON record of the calls (method, latency, status), the "
                             "recommendations shown and the new item's rank (python -m train report reads it)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        return run_demo(args)
    except DemoInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
