"""python -m serving COMMAND ...: run the serving side (never imports torch).

  triton    run the bundled Triton Inference Server on a model repository  (serving/triton/cli.py)
  gateway   run the gRPC recommendation gateway                            (serving/gateway/cli.py)
  client    call the gateway: recommend, embed, upsert, delete, get, health (serving/client.py)
  demo      start the gateway (and Triton), make live calls, stop it    (serving/demo.py, `make demo`)

Each command lives in its own module exposing `add_parser(subparsers)`, which
registers its arguments and sets `handler`; a new command is one more entry
in COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from llmrec.cli import HelpFormatter

COMMANDS = {"triton": "serving.triton.cli", "gateway": "serving.gateway.cli", "client": "serving.client",
            "demo": "serving.demo"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__,
                                     formatter_class=HelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
