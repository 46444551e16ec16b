"""Run the Triton Inference Server bundled in the `nvidia-pytriton` wheel as a child process.

The wheel ships a real `tritonserver` (2.51) with the Python backend, so no
container is needed on a CPU machine. It does not start as is, though:

- the Python backend looks for `triton_python_backend_stub` in its own folder,
  while the wheel keeps one stub per Python version apart; so a backend
  directory is assembled in a private temporary folder: `python/` holds the
  backend library, its utils module and the stub matching this interpreter;
- the stub links against libpython: `LD_LIBRARY_PATH` starts with this
  interpreter's `LIBDIR` (otherwise the loader may pick the system's
  libpython and the stub fails), then the wheel's `nvidia_pytriton.libs`;
- the stub's embedded Python finds numpy/onnxruntime/tokenizers through the
  environment's `bin` first on `PATH`;
- every endpoint binds to 127.0.0.1 unless told otherwise.

`TritonServer` picks free ports (or takes given ones), waits for
`/v2/health/ready`, forwards each log line of the server as a structured
record (logger "llmrec.triton"), and stops the server with SIGINT (Triton's
graceful shutdown), escalating to SIGKILL of the process group it created
only when the shutdown hangs. Failures raise `TritonError` with the model
load errors taken from the log, so a CLI can print them without a stack trace.

`TritonSupervisor` watches a started server from a thread: when the process
dies on its own (crash, kill -9, OOM killer) it logs the exit (code, uptime),
starts it again on the same ports and repository after an exponential
backoff, and gives up (logged at error level, the server left down) once
`RestartPolicy.max_restarts` restarts fell within `window_s`. A `stop()` of
the server (a clean shutdown) is never mistaken for a death.
"""

from __future__ import annotations

import atexit
import collections
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..repository import remove_bytecode, verify_repository

logger = logging.getLogger("llmrec.triton")

INSTALL_HINT = "pip install nvidia-pytriton==0.7.0"
DEFAULT_HOST = "127.0.0.1"
# Lines Triton prints at error level on any machine without a GPU; they are not failures.
CPU_NOISE = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML",
             "DCGM unable to start", "CUDA driver version is insufficient",
             "failed to allocate pinned system memory")
_LOG_LINE = re.compile(r"^([IWEV])(\d{4} \d{2}:\d{2}:\d{2}\.\d+)\s+\d+\s+(\S+)\]\s?(.*)$")
_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "V": logging.DEBUG}


PORT_RETRIES = 2  # new free ports after Triton found one taken (see TritonServer.start)

class TritonError(RuntimeError):
    """A failure to explain to a person (missing binary, bad repository, model load errors); no stack trace needed."""


@dataclass(frozen=True)
class TritonBundle:
    """Where the pieces of the bundled server live on this machine."""

    binary: Path  # tritonserver
    python_backend: Path  # folder with libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub built for this Python version
    libs: Path  # nvidia_pytriton.libs: the server's own shared libraries
    python_libdir: Path  # where this interpreter's libpython lives
    python_bin: Path  # the environment's bin folder (python with numpy, onnxruntime, tokenizers)


def find_bundle() -> TritonBundle:
    """Locate the server bundled in the installed nvidia-pytriton wheel, or raise TritonError saying what is missing.

    The package is found with `find_spec` and never imported (importing pytriton
    pulls in its own server wrappers, which are not used here).
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonError(f"the Triton Inference Server binary comes with the nvidia-pytriton wheel; install it: "
                          f"{INSTALL_HINT}")
    package = Path(list(spec.submodule_search_locations)[0])
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    bundle = TritonBundle(
        binary=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs=package.parent / "nvidia_pytriton.libs",
        python_libdir=Path(sysconfig.get_config_var("LIBDIR") or sys.base_prefix + "/lib"),
        python_bin=Path(sys.prefix) / "bin",
    )
    needed = [(bundle.binary, "the tritonserver binary"),
              (bundle.python_backend / "libtriton_python.so", "the Python backend"),
              (bundle.stub, f"the Python backend stub for Python {version}"),
              (bundle.libs, "the server's shared libraries (nvidia_pytriton.libs)")]
    for path, what in needed:
        if not path.exists():
            raise TritonError(f"{what} is missing from the nvidia-pytriton wheel (expected {path}); reinstall it: "
                              f"{INSTALL_HINT}")
    libpython = sysconfig.get_config_var("LDLIBRARY") or ""
    if not libpython.endswith(".so") and ".so." not in libpython:
        raise TritonError(f"this Python ({sys.executable}) has no shared libpython ({libpython or 'none'}); the "
                          "Python backend stub needs one: use a Python built with --enable-shared")
    return bundle


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port free on `host` right now (the kernel's pick; another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_repository(path: Path, allow_unverified: bool = False) -> list[str]:
    """Names of the models in a Triton repository folder (sub-folders with config.pbtxt); TritonError if none,
    or if its files are not those export recorded in llmrec.json (checked before every start)."""
    if not path.is_dir():
        raise TritonError(f"model repository {path} does not exist or is not a folder")
    models = sorted(p.name for p in path.iterdir() if (p / "config.pbtxt").is_file())
    if not models:
        raise TritonError(f"model repository {path} holds no model (no <model>/config.pbtxt); write one with: "
                          "python -m export.onnx repository --embedder DIR --user-encoder DIR --out DIR")
    try:
        remove_bytecode(path)
        verify_repository(path, allow_unverified)
    except ValueError as exc:
        raise TritonError(str(exc)) from None
    return models


def parse_log_line(line: str) -> dict[str, object]:
    """A Triton log line as {"level", "source", "message"}; lines outside the format (tables) keep level INFO."""
    match = _LOG_LINE.match(line)
    if not match:
        return {"level": logging.INFO, "source": None, "message": line}
    letter, _, source, message = match.groups()
    if message.startswith('"') and message.endswith('"'):
        try:
            message = json.loads(message)
        except ValueError:
            pass
    if any(noise in message for noise in CPU_NOISE):
        return {"level": logging.INFO, "source": source, "message": message}
    return {"level": _LEVELS[letter], "source": source, "message": message}


class TritonServer:
    """One tritonserver child process serving `model_repository` on 127.0.0.1.

    Use as a context manager (`with TritonServer(repo) as server: ...`) or call
    `start()` / `stop()`. Ports left as None are picked free at start. The
    process runs in its own session (a Ctrl-C in the terminal reaches only
    this manager, which then shuts Triton down in order).
    """

    def __init__(
        self,
        model_repository: str | Path,
        *,
        host: str = DEFAULT_HOST,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        startup_timeout: float = 120.0,
        exit_timeout: int = 10,
        log_verbose: int = 0,
        extra_args: tuple[str, ...] = (),
        bundle: TritonBundle | None = None,
        allow_unverified: bool = False,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.allow_unverified = allow_unverified  # serve a repository without llmrec.json (see serving/repository.py)
        self.host = host
        self._requested_ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.ports: dict[str, int] = {}
        self.startup_timeout = startup_timeout
        self.exit_timeout = exit_timeout
        self.log_verbose = log_verbose
        self.extra_args = tuple(extra_args)
        self._bundle = bundle
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._workdir: Path | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=20000)
        self._lock = threading.Lock()
        self._stop_requested = False  # set by stop(): an exit after it is a shutdown, not a death
        self._started_at: float | None = None  # monotonic time of the launch of the current process

    # ------------------------------------------------------------------ addresses
    @property
    def http_url(self) -> str:
        """Base URL of the HTTP/REST endpoint, e.g. http://127.0.0.1:8000."""
        return f"http://{self.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        """host:port of the gRPC endpoint (the form tritonclient.grpc expects)."""
        return f"{self.host}:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports['metrics']}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def died(self) -> int | None:
        """Exit code of a server that exited on its own (crash, kill -9 = -9, OOM); None while it runs, before
        start and once stop() was asked (a requested shutdown is not a death)."""
        process = self._process
        if process is None or self._stop_requested:
            return None
        return process.poll()

    def uptime(self) -> float | None:
        """Seconds since the current process was launched (None before start)."""
        return None if self._started_at is None else time.monotonic() - self._started_at

    def logs(self) -> list[str]:
        """The server's log lines so far (the last 20,000)."""
        with self._lock:
            return list(self._lines)

    def load_errors(self) -> list[str]:
        """Error-level lines of the log (model load failures first among them), CPU-only noise left out."""
        errors = []
        for line in self.logs():
            parsed = parse_log_line(line)
            if parsed["level"] == logging.ERROR:
                errors.append(str(parsed["message"]))
        return errors

    # ------------------------------------------------------------------ life cycle
    def command(self, backend_dir: Path) -> list[str]:
        """The tritonserver command line (ports must be assigned)."""
        bundle = self.bundle
        return [
            str(bundle.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            f"--http-address={self.host}", f"--http-port={self.ports['http']}",
            f"--grpc-address={self.host}", f"--grpc-port={self.ports['grpc']}",
            f"--metrics-address={self.host}", f"--metrics-port={self.ports['metrics']}",
            "--allow-gpu-metrics=false",
            # the configs are written by export.onnx and must be used exactly as written
            "--disable-auto-complete-config",
            "--strict-readiness=true",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        """This process's environment plus what the bundled server and its Python stub need."""
        bundle = self.bundle
        env = dict(os.environ)
        libs = [str(bundle.python_libdir), str(bundle.libs)]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(libs)
        env["PATH"] = f"{bundle.python_bin}:{env.get('PATH', '')}"
        return env

    @property
    def bundle(self) -> TritonBundle:
        if self._bundle is None:
            self._bundle = find_bundle()
        return self._bundle

    def start(self, cancel: Any = None) -> TritonServer:
        """Start the server and block until it is ready; TritonError (server stopped) if it cannot be.

        `cancel` (anything with is_set(): a threading.Event, serving.signals.StopSignal), when set, aborts the wait.
        A free port picked here can be taken by another process before Triton binds it: when Triton exits because
        a port it was given is in use, it is started again on new free ports (up to PORT_RETRIES times).
        """
        for attempt in range(PORT_RETRIES + 1):
            try:
                return self._start(cancel)
            except TritonError:
                lost_race = any("already in use" in line for line in self.logs())
                if not lost_race or attempt == PORT_RETRIES or any(self._requested_ports.values()):
                    raise
                logger.warning("triton_port_taken", extra={"ports": self.ports, "attempt": attempt + 1})
        raise AssertionError("unreachable")

    def _start(self, cancel: Any) -> TritonServer:
        if self.is_running():
            raise TritonError(f"Triton is already running (pid {self.pid})")
        models = check_repository(self.model_repository, self.allow_unverified)
        bundle = self.bundle
        self._workdir = Path(tempfile.mkdtemp(prefix="llmrec-triton-"))
        backend_dir = self._workdir / "backends"
        python_dir = backend_dir / "python"
        shutil.copytree(bundle.python_backend, python_dir, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(bundle.stub, python_dir / "triton_python_backend_stub")
        for name, port in self._requested_ports.items():
            self.ports[name] = port if port is not None else free_port(self.host)
        command = self.command(backend_dir)
        with self._lock:
            self._lines.clear()
        self._stop_requested = False
        logger.info("triton_starting", extra={"repository": str(self.model_repository), "models": models,
                                              "ports": self.ports, "command": command})
        self._process = subprocess.Popen(
            command, env=self.environment(), cwd=self._workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
            start_new_session=True,
        )
        self._started_at = time.monotonic()
        atexit.register(self.stop)
        self._reader = threading.Thread(target=self._forward_log, args=(self._process,), daemon=True,
                                        name="triton-log")
        self._reader.start()
        t0 = time.monotonic()
        try:
            self._wait_ready(cancel)
        except BaseException:
            self.stop()
            raise
        logger.info("triton_ready", extra={"pid": self.pid, "http": self.http_url, "grpc": self.grpc_url,
                                           "metrics": self.metrics_url, "models": self.model_states(),
                                           "seconds": round(time.monotonic() - t0, 3)})
        return self

    def _wait_ready(self, cancel: Any) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if cancel is not None and cancel.is_set():
                raise TritonError("start cancelled")
            code = self._process.poll() if self._process is not None else -1
            if code is not None:
                self._join_reader()
                raise TritonError(self._failure(f"tritonserver exited with code {code} before it was ready"))
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise TritonError(self._failure(f"tritonserver was not ready after {self.startup_timeout:.0f} s"))
            time.sleep(0.1)

    def _failure(self, what: str) -> str:
        errors = self.load_errors()
        tail = self.logs()[-15:]
        lines = [what + f" (repository {self.model_repository})."]
        if errors:
            lines.append("errors from its log:")
            lines += [f"  {e}" for e in errors]
        else:
            lines.append("last lines of its log:")
            lines += [f"  {t}" for t in tail]
        return "\n".join(lines)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1.0) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def model_states(self) -> dict[str, str]:
        """{model: state} from the server's repository index (READY, UNAVAILABLE...)."""
        request = urllib.request.Request(f"{self.http_url}/v2/repository/index", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5.0) as response:
                index = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        return {str(m.get("name")): str(m.get("state", "")) for m in index}

    def _forward_log(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            with self._lock:
                self._lines.append(line)
            parsed = parse_log_line(line)
            level = int(parsed["level"])  # type: ignore[arg-type]
            if logger.isEnabledFor(level):
                logger.log(level, "triton_log", extra={"source": parsed["source"], "detail": parsed["message"],
                                                       "pid": process.pid})

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5.0)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the server exits (or `timeout` passes); its exit code, or None if still running."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        """Shut the server down: SIGINT, wait for its graceful exit, SIGKILL its process group if it hangs.

        Safe to call more than once and when the start failed. Returns the exit code.
        """
        process = self._process
        code = None
        self._stop_requested = True
        if process is not None:
            if process.poll() is None:
                logger.info("triton_stopping", extra={"pid": process.pid})
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=self.exit_timeout + 15)
                except subprocess.TimeoutExpired:
                    logger.warning("triton_kill", extra={"pid": process.pid,
                                                         "reason": f"no exit {self.exit_timeout + 15} s after SIGINT"})
                    self._kill_group(process.pid)
                    process.wait(timeout=10)
            code = process.returncode
            self._kill_leftovers()
            self._join_reader()
            if process.stdout is not None:
                process.stdout.close()
            logger.info("triton_stopped", extra={"pid": process.pid, "exit_code": code})
            self._process = None
            atexit.unregister(self.stop)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return code

    def restart(self, cancel: Any = None) -> TritonServer:
        """Stop (if running) and start again on the same ports, so clients reconnect to the same address."""
        ports = dict(self.ports)
        self.stop()
        if ports:
            self._requested_ports = {name: ports.get(name, port) for name, port in self._requested_ports.items()}
        return self.start(cancel)

    def kill(self) -> None:
        """SIGKILL the server's process group at once (a crash, for fault tests); `stop()` then cleans up."""
        if self._process is not None and self._process.poll() is None:
            self._kill_group(self._process.pid)
            self._process.wait(timeout=10)

    def _kill_leftovers(self) -> None:
        """SIGKILL what is left of a server that died alone: its Python backend stubs outlive it for a few seconds.

        Only processes run from this server's private backend folder are touched (found in /proc by their
        command line), so nothing else can be hit, whatever became of the dead server's process group.
        """
        if self._workdir is None:
            return
        prefix = str(self._workdir / "backends") + os.sep
        try:
            entries = [e for e in os.listdir("/proc") if e.isdigit()]
        except OSError:
            return
        for entry in entries:
            try:
                argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
            except OSError:
                continue
            if argv0.startswith(prefix):
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    @staticmethod
    def _kill_group(pid: int) -> None:
        """SIGKILL the process group led by `pid` (the server and its Python stubs; started by us)."""
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------- supervision
@dataclass(frozen=True)
class RestartPolicy:
    """When a supervised server that died is started again."""

    max_restarts: int = 5  # restart attempts allowed within window_s (failed ones count); 0 = never restart
    window_s: float = 600.0  # the sliding window of the budget
    backoff_s: float = 0.5  # wait before the first attempt in the window; doubled for each further one
    backoff_max_s: float = 30.0  # cap of the wait
    check_interval_s: float = 0.2  # how often the process is polled

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the `attempt`-th restart attempt (1-based) of the window."""
        return float(min(self.backoff_max_s, self.backoff_s * 2.0 ** min(60, max(0, attempt - 1))))


def signal_name(code: int) -> str | None:
    """The name of the signal that killed a process (exit code -9: "SIGKILL"); None for a normal exit."""
    try:
        return signal.Signals(-code).name if code < 0 else None
    except ValueError:
        return None


class TritonSupervisor:
    """A thread that restarts a started `TritonServer` when its process dies on its own.

    `on_event(name, fields)` is called from the supervisor's thread with "exited" (code, uptime),
    "restarted" (attempt, seconds, downtime), "restart_failed" (attempt, error) and "gave_up"; every one is
    also logged as a structured record (events triton_exited, triton_restarting, triton_restarted,
    triton_restart_failed, triton_restart_gave_up). `stop()` ends the watch first, so that the server's own
    stop() that follows is a clean shutdown; a restart in progress is cancelled.
    """

    def __init__(self, server: TritonServer, policy: RestartPolicy | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.server = server
        self.policy = policy or RestartPolicy()
        self.on_event = on_event
        self.exits = 0  # deaths noticed
        self.restarts = 0  # restarts that brought the server back to ready
        self.failed_restarts = 0  # attempts that did not
        self.gave_up = False
        self.last_downtime_s: float | None = None  # death noticed -> ready again, of the last restart
        self._attempts: collections.deque[float] = collections.deque()  # monotonic times of the attempts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> TritonSupervisor:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="triton-supervisor", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """End the watch (and cancel a restart in progress); the server is left as it is."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout if timeout is not None else self.server.exit_timeout + 30.0)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ the watch
    def _emit(self, name: str, **fields: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(name, fields)
            except Exception:  # a listener's bug must not end the supervision
                logger.exception("triton supervisor listener failed on %s", name)

    def _watch(self) -> None:
        while not self._stop.wait(self.policy.check_interval_s):
            code = self.server.died()
            if code is None:
                continue
            self._recover(code)
            if self.gave_up:
                return

    def _recover(self, code: int) -> None:
        """The server died with `code`: restart it (with backoff, within the budget) or give up."""
        noticed = time.monotonic()
        uptime = self.server.uptime()
        pid = self.server.pid
        self.exits += 1
        fields: dict[str, Any] = {"pid": pid, "exit_code": code, "signal": signal_name(code),
                                  "uptime_s": None if uptime is None else round(uptime, 3), "ports": self.server.ports}
        logger.warning("triton_exited", extra={**fields, "restarts_so_far": self.restarts})
        self._emit("exited", **fields)
        policy = self.policy
        while not self._stop.is_set():
            now = time.monotonic()
            while self._attempts and now - self._attempts[0] >= policy.window_s:
                self._attempts.popleft()
            if len(self._attempts) >= policy.max_restarts:
                why = ("the managed Triton stays down (health NOT_SERVING): fix the cause and restart the gateway"
                       if policy.max_restarts else "restarts are disabled (max_restarts 0)")
                logger.error("triton_restart_gave_up", extra={
                    "exit_code": code, "attempts_in_window": len(self._attempts), "max_restarts": policy.max_restarts,
                    "window_s": policy.window_s, "restarts": self.restarts, "failed_restarts": self.failed_restarts,
                    "detail": why})
                self._emit("gave_up", exit_code=code, restarts=self.restarts)
                self.gave_up = True  # after the event: whoever sees the flag has been told why
                self.server.stop()  # reap the dead process, its leftovers and its work folder
                return
            attempt = len(self._attempts) + 1
            delay = policy.delay(attempt)
            logger.info("triton_restarting", extra={"attempt": attempt, "max_restarts": policy.max_restarts,
                                                    "delay_s": delay, "ports": self.server.ports})
            if self._stop.wait(delay):
                return
            self._attempts.append(time.monotonic())
            t0 = time.monotonic()
            try:
                self.server.restart(cancel=self._stop)
            except TritonError as exc:
                if self._stop.is_set():
                    return
                self.failed_restarts += 1
                error = str(exc).splitlines()[0]
                logger.warning("triton_restart_failed", extra={"attempt": attempt, "error": error,
                                                               "seconds": round(time.monotonic() - t0, 3)})
                self._emit("restart_failed", attempt=attempt, error=error)
                continue
            except Exception as exc:  # e.g. the work folder could not be made: an attempt that failed
                if self._stop.is_set():
                    return
                self.failed_restarts += 1
                logger.exception("triton restart attempt %d failed", attempt)
                self._emit("restart_failed", attempt=attempt, error=f"{type(exc).__name__}: {exc}")
                continue
            self.last_downtime_s = time.monotonic() - noticed
            done = {"pid": self.server.pid, "attempt": attempt, "seconds": round(time.monotonic() - t0, 3),
                    "downtime_s": round(self.last_downtime_s, 3), "restarts": self.restarts + 1}
            logger.warning("triton_restarted", extra=done)
            self._emit("restarted", **done)
            self.restarts += 1  # after the event, as for gave_up: whoever sees the count has been told
            return
