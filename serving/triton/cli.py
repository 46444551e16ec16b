"""`python -m serving triton`: run Triton on a model repository until SIGINT/SIGTERM.

Prints one JSON line on stdout when the server is ready (pid and endpoints), so
scripts can wait for it; the server's own log is forwarded as JSON lines on
stderr. With --max-restarts N the server is restarted on the same ports when it
dies on its own (one more JSON line, event triton_restarted, per restart), at
most N times within --restart-window seconds, after a doubling backoff.
Exit code 0 after a requested stop, 1 when the server fails to start or dies
on its own (without restarts left), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys

from llmrec.cli import HelpFormatter
from llmrec.logs import setup_logging

from ..signals import StopSignal
from .server import DEFAULT_HOST, RestartPolicy, TritonError, TritonServer, TritonSupervisor


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `triton` subcommand on a `python -m serving` parser."""
    parser = subparsers.add_parser("triton", help="run the bundled Triton Inference Server on a model repository",
                                   description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model-repository", required=True, help="Triton model repository (written by export.onnx)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address every endpoint binds to (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=None, help="HTTP/REST port (default: a free port)")
    parser.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default: a free port)")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics port (default: a free port)")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for readiness")
    parser.add_argument("--exit-timeout", type=int, default=10, help="seconds Triton may take to drain at shutdown")
    parser.add_argument("--log-verbose", type=int, default=0, help="Triton's --log-verbose level")
    parser.add_argument("--max-restarts", type=int, default=0,
                        help="restart the server when it dies on its own, at most N times within --restart-window "
                             "(default 0: exit with code 1 instead)")
    parser.add_argument("--restart-window", type=float, default=RestartPolicy.window_s,
                        help=f"seconds of the restart budget's sliding window (default {RestartPolicy.window_s})")
    parser.add_argument("--restart-backoff", type=float, default=RestartPolicy.backoff_s,
                        help=f"seconds before the first restart, doubled for each further one in the window, "
                             f"capped at {RestartPolicy.backoff_max_s} (default {RestartPolicy.backoff_s})")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="serve a repository without llmrec.json (its files cannot be checked against export)")
    parser.add_argument("--quiet", action="store_true", help="forward only Triton's warnings and errors")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.max_restarts < 0 or args.restart_window <= 0 or args.restart_backoff < 0:
        print("error: --max-restarts and --restart-backoff must be >= 0, --restart-window > 0", file=sys.stderr)
        return 2
    setup_logging(verbose=not args.quiet)
    with StopSignal() as stop:
        server = TritonServer(args.model_repository, host=args.host, http_port=args.http_port,
                              grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                              startup_timeout=args.startup_timeout, exit_timeout=args.exit_timeout,
                              log_verbose=args.log_verbose, allow_unverified=args.allow_unverified)
        supervisor: TritonSupervisor | None = None
        try:
            try:
                server.start(cancel=stop)
            except TritonError as error:
                if stop.is_set():
                    return 0
                print(f"error: {error}", file=sys.stderr)
                return 1
            print(json.dumps({"event": "triton_ready", "pid": server.pid, "http": server.http_url,
                              "grpc": server.grpc_url, "metrics": server.metrics_url}), flush=True)
            if args.max_restarts > 0:
                policy = RestartPolicy(max_restarts=args.max_restarts, window_s=args.restart_window,
                                       backoff_s=args.restart_backoff,
                                       backoff_max_s=max(args.restart_backoff, RestartPolicy.backoff_max_s))

                def announce(event: str, fields: dict) -> None:
                    if event == "restarted":
                        print(json.dumps({"event": "triton_restarted", **fields}), flush=True)

                supervisor = TritonSupervisor(server, policy, on_event=announce).start()
            while not stop.wait(0.5):
                if supervisor is not None:
                    if supervisor.gave_up:
                        print(f"error: tritonserver died {supervisor.exits} times; no restart left "
                              f"({args.max_restarts} within {args.restart_window:g} s)", file=sys.stderr)
                        return 1
                elif not server.is_running():
                    code = server.stop()
                    print(f"error: tritonserver exited on its own with code {code}", file=sys.stderr)
                    return 1
            if supervisor is not None:
                supervisor.stop()
            server.stop()
            return 0
        finally:
            if supervisor is not None:
                supervisor.stop()
            server.stop()
