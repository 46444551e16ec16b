"""The Triton supervisor's policy without a real server: restart after a death, exponential backoff, the restart
budget (then give up), no restart after a requested stop, a restart in progress cancelled by stop(); and the
config keys (defaults, validation, example YAML, --help). The real kill -9 test is in test_reliability_faults.py."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from serving.gateway.config import ConfigError, TritonConfig, config_from_dict
from serving.triton.server import RestartPolicy, TritonError, TritonSupervisor

ROOT = Path(__file__).resolve().parents[2]
FAST = {"check_interval_s": 0.01, "window_s": 60.0}


class FakeServer:
    """The part of TritonServer the supervisor uses; `crash()` makes the current process die with a code."""

    def __init__(self, fail_restarts: int = 0, restart_seconds: float = 0.0) -> None:
        self.exit_timeout = 1
        self.ports = {"http": 1, "grpc": 2, "metrics": 3}
        self.pid: int | None = 100
        self.code: int | None = None  # exit code of a death not yet handled
        self.stopped = False
        self.fail_restarts = fail_restarts
        self.restart_seconds = restart_seconds
        self.restart_calls: list[float] = []  # monotonic times
        self.cancelled = 0
        self.stop_calls = 0

    def crash(self, code: int = -9) -> None:
        self.code = code

    def died(self) -> int | None:
        return None if self.stopped else self.code

    def uptime(self) -> float:
        return 12.5

    def stop(self) -> int | None:
        self.stop_calls += 1
        self.stopped = True
        self.pid = None
        return self.code

    def restart(self, cancel: threading.Event | None = None) -> FakeServer:
        self.restart_calls.append(time.monotonic())
        self.stop()
        if cancel is not None and cancel.wait(self.restart_seconds):
            self.cancelled += 1
            raise TritonError("start cancelled")
        if self.fail_restarts > 0:
            self.fail_restarts -= 1
            raise TritonError("tritonserver exited with code 1 before it was ready\nmore lines")
        self.stopped, self.code, self.pid = False, None, 100 + len(self.restart_calls)
        return self


def wait_until(predicate, timeout: float = 5.0) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if predicate():
            return True
        time.sleep(0.005)
    return False


@pytest.fixture
def supervised():
    """supervised(server, **policy) -> (supervisor, events); every supervisor is stopped at the end."""
    started: list[TritonSupervisor] = []

    def make(server: FakeServer, **policy):
        events: list[tuple[str, dict]] = []
        supervisor = TritonSupervisor(server, RestartPolicy(**{**FAST, **policy}),
                                      on_event=lambda name, fields: events.append((name, fields))).start()
        started.append(supervisor)
        return supervisor, events

    yield make
    for supervisor in started:
        supervisor.stop(timeout=5)


def test_backoff_doubles_and_is_capped():
    policy = RestartPolicy(backoff_s=0.5, backoff_max_s=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(10_000) == 3.0  # no overflow for a large budget


def test_a_death_is_logged_and_restarted(supervised, caplog):
    server = FakeServer()
    supervisor, events = supervised(server, max_restarts=3, backoff_s=0.05)
    server.crash(-9)
    assert wait_until(lambda: supervisor.restarts == 1)
    assert [name for name, _ in events] == ["exited", "restarted"]
    exited = events[0][1]
    assert exited["exit_code"] == -9 and exited["signal"] == "SIGKILL" and exited["uptime_s"] == 12.5
    assert exited["ports"] == server.ports
    assert events[1][1]["downtime_s"] >= 0.05  # the backoff was waited
    assert server.pid == 101 and not supervisor.gave_up and supervisor.is_alive()
    logged = [r for r in caplog.records if r.name == "llmrec.triton"]
    assert any(r.getMessage() == "triton_exited" and r.uptime_s == 12.5 for r in logged)
    assert any(r.getMessage() == "triton_restarted" for r in logged)


def test_failed_attempts_back_off_exponentially_and_count(supervised):
    server = FakeServer(fail_restarts=2)
    supervisor, events = supervised(server, max_restarts=5, backoff_s=0.1, backoff_max_s=10.0)
    crashed = time.monotonic()
    server.crash(1)
    assert wait_until(lambda: supervisor.restarts == 1)
    assert supervisor.failed_restarts == 2
    assert [name for name, _ in events] == ["exited", "restart_failed", "restart_failed", "restarted"]
    t = [crashed] + server.restart_calls
    gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps  # 0.1, 0.2, 0.4: doubled each time
    assert events[1][1]["error"] == "tritonserver exited with code 1 before it was ready"  # one line


def test_budget_spent_gives_up_and_leaves_the_server_down(supervised, caplog):
    server = FakeServer()
    supervisor, events = supervised(server, max_restarts=2, backoff_s=0.01)
    for n in (1, 2):
        server.crash(-9)
        assert wait_until(lambda n=n: supervisor.restarts == n)
    server.crash(-9)
    assert wait_until(lambda: supervisor.gave_up)
    assert wait_until(lambda: not supervisor.is_alive())  # the watch ended
    assert len(server.restart_calls) == 2 and server.stopped and server.pid is None
    assert [name for name, _ in events][-2:] == ["exited", "gave_up"]
    errors = [r for r in caplog.records if r.levelname == "ERROR" and r.getMessage() == "triton_restart_gave_up"]
    assert len(errors) == 1 and errors[0].max_restarts == 2


def test_zero_restarts_means_never(supervised):
    server = FakeServer()
    supervisor, events = supervised(server, max_restarts=0)
    server.crash(139)
    assert wait_until(lambda: supervisor.gave_up)
    assert server.restart_calls == [] and [name for name, _ in events] == ["exited", "gave_up"]
    assert events[0][1]["signal"] is None  # a plain exit code, not a signal


def test_old_attempts_leave_the_window(supervised):
    server = FakeServer()
    supervisor, _ = supervised(server, max_restarts=1, backoff_s=0.01, window_s=0.3)
    server.crash()
    assert wait_until(lambda: supervisor.restarts == 1)
    time.sleep(0.35)  # the first attempt is out of the window: the budget is whole again
    server.crash()
    assert wait_until(lambda: supervisor.restarts == 2)
    assert not supervisor.gave_up


def test_requested_stop_is_not_a_death(supervised):
    server = FakeServer()
    supervisor, events = supervised(server, max_restarts=3, backoff_s=0.01)
    server.crash(0)
    server.stopped = True  # the exit followed a stop(): died() is None
    time.sleep(0.2)
    assert events == [] and server.restart_calls == []


def test_stop_during_backoff_or_restart_cancels_it(supervised):
    server = FakeServer()
    supervisor, events = supervised(server, max_restarts=3, backoff_s=5.0)
    server.crash()
    assert wait_until(lambda: events)  # the death is noticed; now waiting 5 s
    t0 = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - t0 < 1.0 and server.restart_calls == [] and not supervisor.is_alive()

    slow = FakeServer(restart_seconds=5.0)  # a start that takes long: stop() cancels it at once
    supervisor, events = supervised(slow, max_restarts=3, backoff_s=0.0)
    slow.crash()
    assert wait_until(lambda: slow.restart_calls)
    t0 = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - t0 < 1.0 and slow.cancelled == 1
    assert [name for name, _ in events] == ["exited"] and supervisor.failed_restarts == 0


def test_a_listener_error_does_not_end_the_supervision():
    server = FakeServer()

    def broken(name: str, fields: dict) -> None:
        raise RuntimeError("bug in a listener")

    supervisor = TritonSupervisor(server, RestartPolicy(**FAST, backoff_s=0.01), on_event=broken).start()
    try:
        server.crash()
        assert wait_until(lambda: supervisor.restarts == 1)
    finally:
        supervisor.stop(timeout=5)


# ---------------------------------------------------------------------------------------------- config
def test_restart_keys_defaults_and_validation():
    config = config_from_dict({})
    assert (config.triton.max_restarts, config.triton.restart_window_s, config.triton.restart_backoff_s,
            config.triton.restart_backoff_max_s) == (5, 600.0, 0.5, 30.0)
    for bad, key in (({"max_restarts": -1}, "triton.max_restarts"), ({"max_restarts": 1.5}, "triton.max_restarts"),
                     ({"restart_window_s": 0}, "triton.restart_window_s"),
                     ({"restart_backoff_s": -0.1}, "triton.restart_backoff_s"),
                     ({"restart_backoff_s": 5.0, "restart_backoff_max_s": 1.0}, "triton.restart_backoff_max_s")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            config_from_dict({"triton": bad})
    assert config_from_dict({"triton": {"max_restarts": 0, "restart_backoff_s": 0}}).triton.max_restarts == 0


def test_example_yaml_holds_every_restart_key_with_its_default():
    example = yaml.safe_load((ROOT / "serving" / "serving.example.yaml").read_text())["triton"]
    defaults = TritonConfig()
    for key in ("max_restarts", "restart_window_s", "restart_backoff_s", "restart_backoff_max_s"):
        assert example[key] == getattr(defaults, key), key


def test_gateway_help_lists_the_restart_keys():
    out = subprocess.run([sys.executable, "-m", "serving", "gateway", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for text in ("max_restarts: 5", "restart_window_s: 600.0", "restart_backoff_s: 0.5", "restart_backoff_max_s: 30.0",
                 "--triton-max-restarts", "llmrec_gateway_triton_"):
        assert text in out, text
