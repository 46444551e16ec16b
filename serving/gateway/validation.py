"""Request validation: every field checked, every refusal naming the field and its limit.

Functions take plain Python values (not protobuf messages) so the pipeline can
be called in-process with the same checks. Choices, documented in the proto:
item ids are the catalogue's own strings; an empty, over-long or control-character
id is INVALID_ARGUMENT (never an item), a well-formed id missing from the
catalogue is NOT_FOUND (checked by the pipeline against the item store).

`parse_request` replaces protobuf's own parsing error: proto3 refuses a string
field holding invalid UTF-8 while parsing, which gRPC would report as an
unhelpful INTERNAL "Exception deserializing request"; here the raw bytes are
walked to name the offending field (`texts[2]`, `items[0].title`) and the
call gets INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from llmrec.itemtext import ItemText

from .config import LimitsConfig
from .errors import GatewayError, invalid


# ---------------------------------------------------------------------------------------------- plain requests
@dataclass(frozen=True)
class RecommendQuery:
    history: tuple[str, ...]  # catalogue ids, oldest first
    k: int
    exclude_history: bool = False
    exclude_ids: tuple[str, ...] = ()
    include_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewItem:
    id: str  # the catalogue id; "" = assign one
    title: str
    text: str  # what the item encoder embeds (the title when the request left it empty)
    attributes: dict[str, str] = field(default_factory=dict)


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
