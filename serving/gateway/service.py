"""The Recommender service on the wire: requests parsed and checked, the pipeline called, answers built.

Every field is checked and every refusal names the field and its limit; every failure is answered with a
status code and a one-line message (stack traces go to the log only). The checks take plain Python values (not
protobuf messages) so that in-process callers (the load benchmark's baseline) apply the same ones. Choices,
documented in the proto: item ids are the catalogue's own strings; an empty, over-long or control-character
id is INVALID_ARGUMENT (never an item), a well-formed id missing from the catalogue is NOT_FOUND (checked by the
pipeline against the catalogue).

The servicer parses requests itself (raw bytes in): proto3 refuses a string field holding invalid UTF-8 while
parsing, which gRPC would report as an unhelpful INTERNAL "Exception deserializing request"; `parse_request`
walks the raw bytes to name the offending field (`texts[2]`, `items[0].title`) and the call gets
INVALID_ARGUMENT.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from llmrec.itemtext import ItemText

from ..proto.llmrec.v2 import recommend_pb2 as pb
from .config import GatewayConfig, LimitsConfig
from .errors import BackendUnavailable, DeadlineExceeded, GatewayError, invalid
from .metrics import GatewayMetrics
from .pipeline import NewItem, RecommendationPipeline, RecommendQuery

logger = logging.getLogger("llmrec.gateway")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name  # "llmrec.v2.Recommender"
METHODS = frozenset(m.name for m in pb.DESCRIPTOR.services_by_name["Recommender"].methods)  # metric label values


# ---------------------------------------------------------------------------------------------- field checks
def check_count(values: Sequence[Any], name: str, limit: int, allow_empty: bool = False) -> None:
    if not values and not allow_empty:
        raise invalid(f"{name} is empty: give 1 to {limit} values")
    if len(values) > limit:
        raise invalid(f"{name} has {len(values)} values, above the limit of {limit}")


def check_id(value: str, name: str, max_bytes: int) -> str:
    """One catalogue id: 1..max_bytes bytes of valid UTF-8, no control characters (ids are compared as given)."""
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string id, got {type(value).__name__}")
    if not value:
        raise invalid(f"{name} is empty: item ids are non-empty strings of at most {max_bytes} bytes")
    check_text(value, name, max_bytes, allow_empty=True)  # UTF-8 and size
    if any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in value):
        raise invalid(f"{name} holds a control character: item ids are printable text")
    return value


def check_ids(values: Iterable[str], name: str, limit: int, max_bytes: int, allow_empty: bool = False,
              distinct: bool = False) -> tuple[str, ...]:
    """At most `limit` catalogue ids (check_id); `distinct` refuses repeats (naming both positions)."""
    ids = tuple(values)
    check_count(ids, name, limit, allow_empty)
    seen: dict[str, int] = {}
    for position, value in enumerate(ids):
        check_id(value, f"{name}[{position}]", max_bytes)
        if distinct and value in seen:
            raise invalid(f"{name}[{position}] repeats id {value[:40]!r} (also at {name}[{seen[value]}]): ids must "
                          "be distinct in one call")
        seen.setdefault(value, position)
    return ids


def check_k(k: int, limit: int) -> int:
    if not 1 <= k <= limit:
        raise invalid(f"k is {k}: it must be between 1 and {limit}")
    return int(k)


def check_text(value: str, name: str, max_bytes: int, allow_empty: bool = False) -> str:
    """Valid UTF-8 (no lone surrogates), at most `max_bytes` bytes, non-blank unless `allow_empty`."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise invalid(f"{name} is not valid UTF-8") from None
    if size > max_bytes:
        raise invalid(f"{name} is {size} bytes long, above the limit of {max_bytes} bytes")
    if not allow_empty and not value.strip():
        raise invalid(f"{name} is empty: give a non-blank text of at most {max_bytes} bytes")
    return value


# ---------------------------------------------------------------------------------------------- requests
def check_recommend(history: Sequence[str], k: int, exclude_history: bool, exclude_ids: Sequence[str],
                    include_ids: Sequence[str], limits: LimitsConfig) -> RecommendQuery:
    size = limits.max_text_bytes
    return RecommendQuery(
        history=check_ids(history, "history", limits.max_history, size),
        k=check_k(k, limits.max_k),
        exclude_history=bool(exclude_history),
        exclude_ids=check_ids(exclude_ids, "filter.exclude_ids", limits.max_filter_ids, size, allow_empty=True),
        include_ids=check_ids(include_ids, "filter.include_ids", limits.max_filter_ids, size, allow_empty=True,
                              distinct=True),
    )


def check_texts(texts: Sequence[str], limits: LimitsConfig) -> list[str]:
    check_count(texts, "texts", limits.max_texts)
    return [check_text(t, f"texts[{i}]", limits.max_text_bytes) for i, t in enumerate(texts)]


def check_new_items(items: Sequence[NewItem], limits: LimitsConfig, recipe: ItemText | None = None) -> list[NewItem]:
    """Upserts: ids given are valid and distinct (empty = assign one), a title or a text, bounded attributes.

    An item sent without a text is embedded from its title and attributes by `recipe`, the item-text recipe the
    served encoder was trained with (llmrec.json), so it gets the vector the offline catalogue gives the same item;
    without a recipe the title alone is embedded."""
    check_count(items, "items", limits.max_items)
    seen: dict[str, int] = {}
    out = []
    for i, item in enumerate(items):
        name = f"items[{i}]"
        if item.id:
            check_id(item.id, f"{name}.id", limits.max_text_bytes)
            if item.id in seen:
                raise invalid(f"{name}.id repeats id {item.id[:40]!r} (also items[{seen[item.id]}].id): ids must "
                              "be distinct in one call")
            seen[item.id] = i
        title = check_text(item.title, f"{name}.title", limits.max_text_bytes, allow_empty=True)
        text = check_text(item.text, f"{name}.text", limits.max_text_bytes, allow_empty=True)
        if not title.strip() and not text.strip():
            raise invalid(f"{name} has neither a title nor a text: give at least one (at most "
                          f"{limits.max_text_bytes} bytes each)")
        if len(item.attributes) > limits.max_attributes:
            raise invalid(f"{name}.attributes has {len(item.attributes)} entries, above the limit of "
                          f"{limits.max_attributes}")
        for key, value in item.attributes.items():
            check_text(key, f"{name}.attributes key {key[:40]!r}", limits.max_text_bytes)
            check_text(value, f"{name}.attributes[{key[:40]!r}]", limits.max_text_bytes, allow_empty=True)
        if not text.strip():
            text = recipe.format(title, item.attributes) if recipe is not None else title
        out.append(NewItem(id=item.id, title=title, text=text, attributes=dict(item.attributes)))
    return out


# ---------------------------------------------------------------------------------------------- parsing
def parse_request(message_type: type[Message], data: bytes) -> Message:
    """Parse a request; a parsing failure becomes INVALID_ARGUMENT naming the non-UTF-8 field when there is one."""
    try:
        return message_type.FromString(data)
    except DecodeError:
        where = find_invalid_utf8(message_type.DESCRIPTOR, data)
    if where is not None:
        raise invalid(f"{where} is not valid UTF-8")
    raise GatewayError("INVALID_ARGUMENT", f"the request is not a valid {message_type.DESCRIPTOR.full_name} message")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def find_invalid_utf8(descriptor: Descriptor, data: bytes, prefix: str = "") -> str | None:
    """The path of the first string field in `data` (wire format) holding invalid UTF-8, or None."""
    counts: dict[int, int] = {}
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(data, pos)
                continue
            if wire in (1, 5):
                pos += 8 if wire == 1 else 4
                continue
            if wire != 2:
                return None
            length, pos = _varint(data, pos)
            chunk, pos = data[pos:pos + length], pos + length
            fd = descriptor.fields_by_number.get(number)
            if fd is None:
                continue
            index = counts.get(number, 0)
            counts[number] = index + 1
            repeated = fd.is_repeated
            name = f"{prefix}{fd.name}[{index}]" if repeated else f"{prefix}{fd.name}"
            if fd.type == FieldDescriptor.TYPE_STRING:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    return name
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                if fd.message_type.GetOptions().map_entry:
                    if find_invalid_utf8(fd.message_type, chunk) is not None:
                        return f"{prefix}{fd.name} (a key or value)"
                else:
                    found = find_invalid_utf8(fd.message_type, chunk, name + ".")
                    if found is not None:
                        return found
    except ValueError:
        return None
    return None


# ---------------------------------------------------------------------------------------------- servicer
class RecommenderServicer:
    """The five methods of llmrec.v2.Recommender over a RecommendationPipeline."""

    def __init__(self, pipeline: RecommendationPipeline, config: GatewayConfig, metrics: GatewayMetrics,
                 ready: threading.Event, item_text: ItemText | None) -> None:
        """`item_text`: the recipe the served item encoder was trained with (None: texts are embedded as sent)."""
        self.pipeline = pipeline
        self.item_text = item_text
        self.limits = config.limits
        self.read_only = config.read_only
        self.metrics = metrics
        self.ready = ready  # set by the gateway's health loop

    # ------------------------------------------------------------------ plumbing
    def _deadline(self, context: grpc.ServicerContext) -> float:
        remaining = context.time_remaining()
        if remaining is None or remaining > self.limits.default_timeout_s:
            remaining = self.limits.default_timeout_s
        if remaining <= 0:
            raise DeadlineExceeded("the call's deadline had passed when it arrived")
        return time.monotonic() + remaining

    def _require_ready(self) -> None:
        if not self.ready.is_set():
            raise BackendUnavailable("the gateway is not ready (Triton or the item index is not ready); retry later")

    def _call(self, method: str, raw: bytes, context: grpc.ServicerContext, request_type: type[Message],
              handler: Callable[[Any, float], Message]) -> Message:
        t0 = time.perf_counter()
        code = "OK"
        try:
            request = parse_request(request_type, raw)
            deadline = self._deadline(context)
            return handler(request, deadline)
        except GatewayError as error:
            code = error.code
            if code == "INTERNAL":
                logger.warning("call_failed", extra={"method": method, "code": code, "detail": error.message})
            context.abort(grpc.StatusCode[code], error.message)
        except Exception as error:  # a bug: the log gets the trace, the caller one line
            code = "INTERNAL"
            logger.exception("unexpected error in %s", method)
            logger.error("call_failed", extra={"method": method, "code": code,
                                               "error": f"{type(error).__name__}: {error}"})
            context.abort(grpc.StatusCode.INTERNAL, "internal error (details in the gateway log)")
        finally:
            self.metrics.requests.labels(method, code).inc()
            self.metrics.latency.labels(method).observe(time.perf_counter() - t0)
        raise AssertionError("unreachable")  # context.abort always raises

    # ------------------------------------------------------------------ methods
    def Recommend(self, raw: bytes, context: grpc.ServicerContext) -> Message:  # noqa: N802 - gRPC method name
        return self._call("Recommend", raw, context, pb.RecommendRequest, self._recommend)

    def EmbedItems(self, raw: bytes, context: grpc.ServicerContext) -> Message:  # noqa: N802
        return self._call("EmbedItems", raw, context, pb.EmbedItemsRequest, self._embed)

    def UpsertItems(self, raw: bytes, context: grpc.ServicerContext) -> Message:  # noqa: N802
        return self._call("UpsertItems", raw, context, pb.UpsertItemsRequest, self._upsert)

    def DeleteItems(self, raw: bytes, context: grpc.ServicerContext) -> Message:  # noqa: N802
        return self._call("DeleteItems", raw, context, pb.DeleteItemsRequest, self._delete)

    def GetItems(self, raw: bytes, context: grpc.ServicerContext) -> Message:  # noqa: N802
        return self._call("GetItems", raw, context, pb.GetItemsRequest, self._get)

    def _recommend(self, request: pb.RecommendRequest, deadline: float) -> pb.RecommendResponse:
        query = check_recommend(request.history, request.k, request.exclude_history, request.filter.exclude_ids,
                                request.filter.include_ids, self.limits)
        self._require_ready()
        items = self.pipeline.recommend(query, deadline)
        return pb.RecommendResponse(items=[pb.ScoredItem(id=r.id, score=r.score, title=r.title,
                                                         attributes=r.attributes) for r in items])

    def _embed(self, request: pb.EmbedItemsRequest, deadline: float) -> pb.EmbedItemsResponse:
        texts = check_texts(list(request.texts), self.limits)
        self._require_ready()
        vectors = self.pipeline.embed(texts, deadline)
        return pb.EmbedItemsResponse(vectors=[pb.Vector(values=v.tolist()) for v in vectors],
                                     dim=int(vectors.shape[1]))

    def _refuse_writes(self, method: str) -> None:
        if self.read_only:
            raise GatewayError("FAILED_PRECONDITION", f"this gateway is a read replica (read_only: true): send "
                                                      f"{method} to the writer")

    def _upsert(self, request: pb.UpsertItemsRequest, deadline: float) -> pb.UpsertItemsResponse:
        self._refuse_writes("UpsertItems")
        items = check_new_items([NewItem(id=i.id, title=i.title, text=i.text, attributes=dict(i.attributes))
                                 for i in request.items], self.limits, self.item_text)
        self._require_ready()
        ids = self.pipeline.upsert(items, deadline)
        return pb.UpsertItemsResponse(ids=ids, index_size=len(self.pipeline.catalog))

    def _delete(self, request: pb.DeleteItemsRequest, deadline: float) -> pb.DeleteItemsResponse:
        self._refuse_writes("DeleteItems")
        ids = check_ids(request.ids, "ids", self.limits.max_items, self.limits.max_text_bytes, distinct=True)
        removed, missing = self.pipeline.delete(ids)
        return pb.DeleteItemsResponse(deleted=removed, missing_ids=missing, index_size=len(self.pipeline.catalog))

    def _get(self, request: pb.GetItemsRequest, deadline: float) -> pb.GetItemsResponse:
        ids = check_ids(request.ids, "ids", self.limits.max_items, self.limits.max_text_bytes)
        items, missing = self.pipeline.get(ids)
        return pb.GetItemsResponse(items=[pb.Item(id=i.key, title=i.title, attributes=i.attributes) for i in items],
                                   missing_ids=missing)


def method_handlers(servicer: RecommenderServicer) -> grpc.GenericRpcHandler:
    """The service's handlers with raw-bytes requests (the servicer parses them) and protobuf responses."""
    responses = {"Recommend": pb.RecommendResponse, "EmbedItems": pb.EmbedItemsResponse,
                 "UpsertItems": pb.UpsertItemsResponse, "DeleteItems": pb.DeleteItemsResponse,
                 "GetItems": pb.GetItemsResponse}
    handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name),
                                                           response_serializer=response.SerializeToString)
                for name, response in responses.items()}
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
