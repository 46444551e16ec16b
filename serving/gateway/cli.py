"""`python -m serving gateway --config serving.yaml`: run the gRPC gateway until SIGINT/SIGTERM.

Prints one JSON line on stdout when the gateway listens (pid, gRPC address,
metrics port, serving state), so scripts can wait for it; logs are JSON lines
on stderr. Exit code 0 after a requested stop, 1 when it cannot start, 2 for a
bad config. The auth token (auth.enabled) is read from the environment
variable or file the config names, never from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from ..logs import setup_logging
from .config import ConfigError, load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `gateway` subcommand on a `python -m serving` parser."""
    parser = subparsers.add_parser("gateway", help="run the gRPC recommendation gateway", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see serving/serving.example.yaml)")
    parser.add_argument("--host", default=None, help="override `host` (default in the config: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="override `port` (0 = a free port)")
    parser.add_argument("--metrics-port", type=int, default=None, help="override `metrics_port` (0 = a free port)")
    parser.add_argument("--triton-url", default=None, help="override `triton.url` (host:port of Triton's gRPC)")
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from .server import Gateway, StartupError  # FAISS and the server load only when the gateway runs

    setup_logging(verbose=not args.quiet)
    overrides = {key: value for key, value in (("host", args.host), ("port", args.port),
                                               ("metrics_port", args.metrics_port), ("triton.url", args.triton_url))
                 if value is not None}
    try:
        config = load_config(args.config, overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    gateway = Gateway(config)
    try:
        try:
            gateway.start()
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except StartupError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(json.dumps({"event": "gateway_ready", "pid": os.getpid(), "address": gateway.address,
                          "metrics_port": gateway.metrics_port, "serving": gateway.is_ready()}), flush=True)
        stop.wait()
        return 0
    finally:
        gateway.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
