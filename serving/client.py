"""`python -m serving client ...`: call the recommendation gateway from a terminal.

    python -m serving client recommend --history 12,7,93 -k 10        # numbered titles, best first
    python -m serving client recommend --history 12,7,93 --keep-history --json
    python -m serving client get 12,7,93
    python -m serving client embed "Toy Story (1995)" "Heat (1995)"
    python -m serving client upsert --title "New movie (2025)" [--id 2000] [--text ...] [--attr genres=Drama]
    python -m serving client delete 2000
    python -m serving client health

`--address` (default 127.0.0.1:50051) names the gateway; when it runs with
auth, the token is read from the environment variable `--token-env` (default
LLMREC_GATEWAY_TOKEN), never from the command line (it would land in the shell
history and the process list). Errors print `error: CODE: message` and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmrec.cli import HelpFormatter

from .gateway.config import DEFAULT_TOKEN_ENV
from .proto.llmrec.v2 import recommend_pb2 as pb
from .proto.llmrec.v2 import recommend_pb2_grpc as pb_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"


def parse_ids(text: str) -> list[str]:
    """"12,7,93" -> ["12", "7", "93"]: the catalogue's ids, comma-separated (an id holding a comma cannot be
    given here; the gRPC API takes any string)."""
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise argparse.ArgumentTypeError(f"expected comma-separated item ids, got {text!r}")
    return ids


def parse_attribute(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `client` subcommand (with its own sub-commands) on a `python -m serving` parser."""
    parser = subparsers.add_parser("client", help="call the recommendation gateway", description=__doc__,
                                   formatter_class=HelpFormatter)
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help=f"gateway host:port (default {DEFAULT_ADDRESS})")
    parser.add_argument("--token-env", default=DEFAULT_TOKEN_ENV,
                        help=f"environment variable holding the bearer token, if any (default {DEFAULT_TOKEN_ENV})")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of the call in seconds")
    parser.add_argument("--ca", default=None, metavar="PEM",
                        help="connect over TLS, trusting this CA certificate (the gateway's tls.cert_file issuer)")
    parser.add_argument("--cert", default=None, metavar="PEM", help="client certificate (mutual TLS, with --key)")
    parser.add_argument("--key", default=None, metavar="PEM", help="client private key (mutual TLS)")
    parser.add_argument("--json", action="store_true", help="print the response as JSON")
    calls = parser.add_subparsers(dest="call", metavar="CALL", required=True)
    rec = calls.add_parser("recommend", formatter_class=HelpFormatter, help="top-k items after a history")
    rec.add_argument("--history", type=parse_ids, required=True,
                     help="catalogue item ids, oldest first: 12,7,93 (MovieLens movieIds on the demo)")
    rec.add_argument("-k", type=int, default=10, help="number of items (default 10)")
    rec.add_argument("--keep-history", action="store_true", help="allow items of the history in the answer")
    rec.add_argument("--exclude", type=parse_ids, default=[], help="ids never to recommend")
    rec.add_argument("--among", type=parse_ids, default=[], help="rank only among these ids")
    get = calls.add_parser("get", formatter_class=HelpFormatter, help="titles and attributes of items")
    get.add_argument("ids", type=parse_ids, help="item ids: 12,7,93")
    emb = calls.add_parser("embed", formatter_class=HelpFormatter, help="item-space vectors of texts")
    emb.add_argument("texts", nargs="+", help="item texts, one argument each")
    up = calls.add_parser("upsert", formatter_class=HelpFormatter, help="add or replace one item")
    up.add_argument("--id", default="", help="the item's catalogue id (default: the gateway assigns one)")
    up.add_argument("--title", default="", help="the item's title (what recommendations show)")
    up.add_argument("--text", default="", help="text to embed (default: the title)")
    up.add_argument("--attr", type=parse_attribute, action="append", default=[], help="attribute key=value")
    dele = calls.add_parser("delete", formatter_class=HelpFormatter, help="remove items")
    dele.add_argument("ids", type=parse_ids, help="item ids: 12,7,93")
    calls.add_parser("health", formatter_class=HelpFormatter, help="the gateway's health status")
    parser.set_defaults(handler=run)
    return parser


def _metadata(token_env: str) -> list[tuple[str, str]]:
    token = os.environ.get(token_env, "").strip()
    return [("authorization", f"Bearer {token}")] if token else []


def call(args: argparse.Namespace, channel: grpc.Channel) -> tuple[Any, list[str]]:
    """Make the call; returns the response and the lines to print."""
    stub = pb_grpc.RecommenderStub(channel)
    kw = {"timeout": args.timeout, "metadata": _metadata(args.token_env)}
    if args.call == "recommend":
        response = stub.Recommend(pb.RecommendRequest(
            history=args.history, k=args.k, exclude_history=not args.keep_history,
            filter=pb.Filter(exclude_ids=args.exclude, include_ids=args.among)), **kw)
        lines = [f"{rank:>3}. {item.title or '(no title)'}  [id {item.id}, score {item.score:.4f}]"
                 for rank, item in enumerate(response.items, 1)]
        return response, lines
    if args.call == "get":
        response = stub.GetItems(pb.GetItemsRequest(ids=args.ids), **kw)
        lines = [f"{item.id}: {item.title}" + (f"  {dict(item.attributes)}" if item.attributes else "")
                 for item in response.items]
        lines += [f"{i}: (not found)" for i in response.missing_ids]
        return response, lines
    if args.call == "embed":
        response = stub.EmbedItems(pb.EmbedItemsRequest(texts=args.texts), **kw)
        lines = [f"{text[:40]!r}: [{', '.join(f'{x:.4f}' for x in v.values[:6])}, ...] ({response.dim}-d)"
                 for text, v in zip(args.texts, response.vectors, strict=True)]
        return response, lines
    if args.call == "upsert":
        response = stub.UpsertItems(pb.UpsertItemsRequest(items=[pb.ItemUpsert(
            id=args.id, title=args.title, text=args.text, attributes=dict(args.attr))]), **kw)
        return response, [f"upserted id {response.ids[0]} (index size {response.index_size})"]
    if args.call == "delete":
        response = stub.DeleteItems(pb.DeleteItemsRequest(ids=args.ids), **kw)
        lines = [f"deleted {response.deleted} (index size {response.index_size})"]
        if response.missing_ids:
            lines.append(f"not found: {', '.join(str(i) for i in response.missing_ids)}")
        return response, lines
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                         timeout=args.timeout)
    return response, [health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)]


def open_channel(address: str, ca: str | None = None, cert: str | None = None, key: str | None = None
                 ) -> grpc.Channel:
    """A channel to the gateway: TLS when `ca` is given (with a client certificate when `cert` and `key` are)."""
    if ca is None:
        if cert or key:
            raise ValueError("--cert and --key need --ca (they are sent inside a TLS connection)")
        return grpc.insecure_channel(address)
    if (cert is None) != (key is None):
        raise ValueError("--cert and --key go together")
    read = lambda path: Path(path).read_bytes() if path else None  # noqa: E731
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(read(ca), read(key), read(cert)))


def run(args: argparse.Namespace) -> int:
    try:
        channel = open_channel(args.address, args.ca, args.cert, args.key)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with channel:
        try:
            response, lines = call(args, channel)
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
    else:
        print("\n".join(lines))
    return 0
