"""`python -m serving gateway --config serving.yaml`: run the gRPC gateway until SIGINT/SIGTERM.

Prints one JSON line on stdout when the gateway listens (pid, gRPC address,
metrics port, serving state, pid of the Triton it started, if any), so scripts
can wait for it; logs are JSON lines on stderr. Exit code 0 after a requested
stop, 1 when it cannot start, 2 for a bad config. The auth token (auth.enabled) is read from the environment
variable or file the config names, never from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from llmrec.cli import HelpFormatter
from llmrec.logs import setup_logging

from ..signals import StopSignal
from .config import ConfigError, TritonConfig, load_config

RESTART_KEYS = (("max_restarts", "restarts allowed within restart_window_s (failed attempts count); beyond them "
                                 "the gateway gives up: Triton stays down, health NOT_SERVING, an error is logged; "
                                 "0 = never restart"),
                ("restart_window_s", "sliding window of that budget, seconds"),
                ("restart_backoff_s", "wait before the first restart; doubled for each further one in the window"),
                ("restart_backoff_max_s", "cap of that wait"))


def restart_epilog() -> str:
    """The supervision keys of the managed Triton with their defaults (taken from TritonConfig)."""
    defaults = TritonConfig()
    lines = ["managed Triton (triton.url: null): when the tritonserver the gateway started dies on its own (crash,",
             "kill -9, OOM), the gateway logs it (event triton_exited: exit code, uptime) and starts it again on",
             "the same ports and repository (triton_restarted); a clean gateway shutdown never restarts it.",
             "Metrics: llmrec_gateway_triton_{exits,restarts,restart_failures}_total, _triton_restart_gave_up.",
             "Config keys under `triton:` (default):"]
    for key, text in RESTART_KEYS:
        head = f"  {key}: {getattr(defaults, key)!r}"
        lines += textwrap.wrap(text, width=100, initial_indent=f"{head:<30}", subsequent_indent=" " * 30)
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `gateway` subcommand on a `python -m serving` parser."""
    parser = subparsers.add_parser("gateway", help="run the gRPC recommendation gateway", description=__doc__,
                                   epilog=restart_epilog(), formatter_class=HelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see serving/serving.example.yaml)")
    parser.add_argument("--host", default=None, help="override `host` (default in the config: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="override `port` (0 = a free port)")
    parser.add_argument("--metrics-port", type=int, default=None, help="override `metrics_port` (0 = a free port)")
    parser.add_argument("--triton-url", default=None,
                        help="override `triton.url` (http://host:port, or host:port for gRPC)")
    parser.add_argument("--triton-max-restarts", type=int, default=None,
                        help=f"override `triton.max_restarts` (default {TritonConfig.max_restarts}; 0 = never restart "
                             "the managed Triton)")
    parser.add_argument("--triton-restart-window", type=float, default=None,
                        help=f"override `triton.restart_window_s` (default {TritonConfig.restart_window_s} s)")
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from .server import Gateway, StartupError  # FAISS and the server load only when the gateway runs

    setup_logging(verbose=not args.quiet)
    overrides = {key: value for key, value in (("host", args.host), ("port", args.port),
                                               ("metrics_port", args.metrics_port), ("triton.url", args.triton_url),
                                               ("triton.max_restarts", args.triton_max_restarts),
                                               ("triton.restart_window_s", args.triton_restart_window))
                 if value is not None}
    try:
        config = load_config(args.config, overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with StopSignal() as stop:
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
                              "metrics_port": gateway.metrics_port, "serving": gateway.is_ready(),
                              "triton_pid": gateway.triton.pid if gateway.triton is not None else None}), flush=True)
            stop.wait()
            return 0
        finally:
            gateway.stop()
