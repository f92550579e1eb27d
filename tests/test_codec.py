"""Unit tests for dfcore.core._codec: JSON round-trips, type-directed decoding, codecs, sizes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import socket
import threading
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, NewType, Optional, TypedDict, Union

import pydantic
import pytest

from dfcore.core._call_args import decode_call_args, return_hint
from dfcore.core._codec import (
    IdentityCodec,
    JSONConverter,
    PayloadCodec,
    check_size,
    safe_decode,
    safe_encode,
)
from dfcore.core._convert import convert
from dfcore.core._errors import CodecUnavailableError, PayloadTooLargeError, SerializationError


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Line:
    sku: str
    price: Decimal
    quantity: int = 1


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed_at: dt.datetime
    lines: list[Line]
    color: Color = Color.RED
    note: Optional[str] = None  # noqa: UP045 - the typing.Optional spelling is under test


@dataclasses.dataclass
class Cat:
    name: str
    meows: bool


@dataclasses.dataclass
class Dog:
    name: str
    barks: bool


class Customer(pydantic.BaseModel):
    name: str
    since: dt.date
    tags: set[str] = set()


class Point(NamedTuple):
    x: int
    y: float


class Movie(TypedDict):
    title: str


@pytest.fixture
def json() -> JSONConverter:
    """A fresh converter."""
    return JSONConverter()


def roundtrip(json: JSONConverter, value: Any, hint: Any) -> Any:
    return convert(json.loads(json.dumps(value)), hint)


# --- round-trips ------------------------------------------------------------------------------


def sample_order() -> Order:
    return Order(
        id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        placed_at=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        lines=[Line("widget", Decimal("9.99"), 2), Line("gadget", Decimal("0.10"))],
        color=Color.BLUE,
    )


def test_dataclass_nested_in_list_roundtrips(json: JSONConverter) -> None:
    orders = [sample_order(), sample_order()]
    back = roundtrip(json, orders, list[Order])
    assert back == orders
    assert isinstance(back[0].lines[0], Line)
    assert back[0].placed_at.utcoffset() == dt.timedelta(hours=2)
    assert back[0].lines[1].price == Decimal("0.10")
    assert str(back[0].lines[1].price) == "0.10"  # not 0.1: no float on the way


def test_dict_of_dataclasses_roundtrips(json: JSONConverter) -> None:
    value = {"a": Line("x", Decimal("1")), "b": Line("y", Decimal("2.5"), 3)}
    assert roundtrip(json, value, dict[str, Line]) == value


def test_pydantic_model_roundtrips(json: JSONConverter) -> None:
    customer = Customer(name="Bob", since=dt.date(2020, 2, 29), tags={"vip", "eu"})
    back = roundtrip(json, customer, Customer)
    assert isinstance(back, Customer)
    assert back == customer


def test_pydantic_model_with_binary_bytes_roundtrips(json: JSONConverter) -> None:
    class Blob(pydantic.BaseModel):
        data: bytes

    blob = Blob(data=b"\x00\xff\xfe")
    assert roundtrip(json, blob, Blob) == blob


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (dt.datetime(2024, 1, 2, 3, 4, 5, 678, tzinfo=dt.UTC), dt.datetime),
        (dt.datetime(2024, 1, 2, 3, 4, 5), dt.datetime),
        (dt.date(2024, 1, 2), dt.date),
        (dt.time(23, 59, 1), dt.time),
        (dt.timedelta(days=1, seconds=3, microseconds=500000), dt.timedelta),
        (uuid.uuid4(), uuid.UUID),
        (Decimal("12345678901234567890.123456789"), Decimal),
        (Color.BLUE, Color),
        (Priority.HIGH, Priority),
        (b"\x00\x01binary\xff", bytes),
        (bytearray(b"abc"), bytearray),
        (Path("/tmp/x.txt"), Path),
        (Point(1, 2.5), Point),
        ((1, "a"), tuple[int, str]),
        ((1, 2, 3), tuple[int, ...]),
        ({1, 2, 3}, set[int]),
        (frozenset({"a"}), frozenset[str]),
        ({1: "one", 2: "two"}, dict[int, str]),
        ({uuid.UUID(int=1): 1}, dict[uuid.UUID, int]),
        ("red", Literal["red", "blue"]),
    ],
)
def test_scalars_and_containers_roundtrip(json: JSONConverter, value: Any, hint: Any) -> None:
    back = roundtrip(json, value, hint)
    assert back == value
    assert type(back) is type(value)


def test_datetime_with_timezone_keeps_offset(json: JSONConverter) -> None:
    tz = dt.timezone(dt.timedelta(hours=-5, minutes=-30))
    when = dt.datetime(2024, 3, 10, 8, 0, tzinfo=tz)
    back = roundtrip(json, when, dt.datetime)
    assert back == when and back.utcoffset() == tz.utcoffset(None)


def test_z_suffix_is_accepted_as_utc() -> None:
    assert convert("2024-01-01T00:00:00Z", dt.datetime) == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def test_bytes_are_tagged_and_restored_without_a_hint(json: JSONConverter) -> None:
    encoded = json.dumps({"k": b"\x00hi"})
    assert b'"$bytes"' in encoded
    assert json.loads(encoded) == {"k": b"\x00hi"}
    assert convert({"$bytes": "AGhp"}, bytes) == b"\x00hi"


def test_a_dict_that_only_looks_like_the_bytes_tag_is_kept(json: JSONConverter) -> None:
    assert json.loads(b'{"$bytes": "not base64!"}') == {"$bytes": "not base64!"}
    assert json.loads(b'{"$bytes": "AA==", "other": 1}') == {"$bytes": "AA==", "other": 1}


def test_sets_encode_sorted_so_equal_values_give_equal_bytes(json: JSONConverter) -> None:
    assert json.dumps({"b", "c", "a"}) == b'["a","b","c"]'


def test_optional_accepts_none_and_value(json: JSONConverter) -> None:
    hint = Optional[Line]  # noqa: UP045
    assert roundtrip(json, None, hint) is None
    assert roundtrip(json, Line("a", Decimal(1)), hint) == Line("a", Decimal(1))
    assert roundtrip(json, None, dt.datetime | None) is None


def test_union_prefers_exact_json_type_then_member_order() -> None:
    assert convert(1, Union[float, int]) == 1 and type(convert(1, float | int)) is int  # noqa: UP007
    assert type(convert(1.5, int | float)) is float
    assert convert("abc", dt.datetime | str) == "abc"
    assert convert("2024-01-01T00:00:00", dt.datetime | int) == dt.datetime(2024, 1, 1)
    assert convert(["x"], list[int] | list[str]) == ["x"]


def test_union_of_dataclasses_picks_the_one_whose_fields_match() -> None:
    assert convert({"name": "rex", "barks": True}, Cat | Dog) == Dog("rex", True)
    assert convert({"name": "tom", "meows": False}, Cat | Dog) == Cat("tom", False)


def test_union_failure_names_the_union() -> None:
    with pytest.raises(SerializationError, match=r"int \| str.*got object"):
        convert({"a": 1}, int | str)


def test_value_already_of_the_hinted_type_is_returned_as_is() -> None:
    line = Line("a", Decimal(1))
    assert convert(line, Line) is line
    when = dt.datetime.now(dt.UTC)
    assert convert(when, dt.datetime) is when


def test_any_missing_typed_dict_and_plain_classes_leave_values_unchanged() -> None:
    value = {"title": "x"}

    class Plain:
        pass

    for hint in (Any, object, None, Movie, Plain, "Unresolved"):
        assert convert(value, hint) is value


def test_int_float_coercions() -> None:
    assert type(convert(3, float)) is float
    assert convert(3.0, int) == 3 and type(convert(3.0, int)) is int
    with pytest.raises(SerializationError, match=r"expected int, got number 3\.5"):
        convert(3.5, int)


def test_subclasses_newtype_annotated_and_abstract_collections() -> None:
    class Sku(str):
        pass

    UserId = NewType("UserId", int)
    assert type(convert("w-1", Sku)) is Sku
    assert convert(5, UserId) == 5
    assert convert(["2024-01-01"], Annotated[Sequence[dt.date], "meta"]) == [dt.date(2024, 1, 1)]
    assert convert({"a": "1.5"}, Mapping[str, Decimal]) == {"a": Decimal("1.5")}
    with pytest.raises(SerializationError, match="expected int, got string"):
        convert("5", UserId)


def test_namedtuple_from_list_and_literal_enum() -> None:
    assert convert([1, 2], Point) == Point(1, 2.0)
    assert convert("blue", Literal[Color.BLUE]) is Color.BLUE
    with pytest.raises(SerializationError, match="not one of the literal values"):
        convert("green", Literal["red", "blue"])


def test_dataclass_ignores_unknown_keys_for_forward_compatibility() -> None:
    assert convert({"sku": "a", "price": "1", "removed_field": 3}, Line) == Line("a", Decimal(1))


def test_dataclass_with_forward_reference_to_unknown_name_still_converts_known_fields() -> None:
    @dataclasses.dataclass
    class Local:
        when: dt.date
        other: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821

    back = convert({"when": "2024-02-03", "other": {"x": 1}}, Local)
    assert back.when == dt.date(2024, 2, 3)
    assert back.other == {"x": 1}


# --- conversion errors ------------------------------------------------------------------------


def test_conversion_error_names_hint_json_type_and_path() -> None:
    bad = {"id": str(uuid.uuid4()), "placed_at": "2024-01-01T00:00:00", "lines": [{}, {}]}
    bad["lines"] = [{"sku": "a", "price": "1"}, {"sku": "b", "price": "lots"}]
    with pytest.raises(SerializationError) as info:
        convert(bad, Order)
    message = str(info.value)
    assert "to Order" in message
    assert "lines[1].price" in message
    assert "expected Decimal, got string 'lots'" in message


@pytest.mark.parametrize(
    ("value", "hint", "needle"),
    [
        ("x", int, "expected int, got string 'x'"),
        (None, str, "expected str, got null"),
        ("tomorrow", dt.datetime, "expected datetime, got string 'tomorrow'"),
        ("not-a-uuid", uuid.UUID, "expected UUID, got string"),
        ("green", Color, "valid values: 'red', 'blue'"),
        ([1, 2, 3], tuple[int, int], "expected 2 items, got 3"),
        ({"a": 1}, list[int], "expected list[int], got object"),
        ("AA==", bytes, "bytes are sent as"),
        ({"sku": "a"}, Line, "TypeError"),
        ({"name": 1}, Customer, "validation error"),
        ({"x": 1}, dict[int, int], "[key 'x']"),
    ],
)
def test_conversion_errors(value: Any, hint: Any, needle: str) -> None:
    with pytest.raises(SerializationError) as info:
        convert(value, hint)
    assert needle in str(info.value)


# --- encoding errors --------------------------------------------------------------------------


def test_unsupported_object_names_its_type_and_what_is_supported(json: JSONConverter) -> None:
    with pytest.raises(SerializationError) as info:
        json.dumps({"payload": [object()]}, what="arguments of activity 'charge'")
    message = str(info.value)
    assert "arguments of activity 'charge'" in message
    assert "object is not JSON-serializable" in message
    assert "dataclasses, pydantic models" in message


def test_socket_names_its_qualified_type(json: JSONConverter) -> None:
    with socket.socket() as sock, pytest.raises(SerializationError) as info:
        json.dumps(sock)
    assert "socket.socket is not JSON-serializable" in str(info.value)


def test_unsupported_field_inside_dataclass(json: JSONConverter) -> None:
    @dataclasses.dataclass
    class Holder:
        thing: object

    with pytest.raises(SerializationError, match=r"_thread\.lock is not JSON-serializable"):
        json.dumps(Holder(threading.Lock()))


def test_big_integer_says_what_to_do(json: JSONConverter) -> None:
    with pytest.raises(SerializationError, match="64 bits; send larger numbers as str or Decimal"):
        json.dumps(2**70)


def test_loads_garbage_says_not_valid_json(json: JSONConverter) -> None:
    with pytest.raises(SerializationError, match=r"^history event is not valid JSON: "):
        json.loads(b"{nope", what="history event")


def test_converter_default_is_extensible() -> None:
    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

    class MoneyConverter(JSONConverter):
        def default(self, obj: Any) -> Any:
            if isinstance(obj, Money):
                return {"cents": obj.cents}
            return super().default(obj)

    assert MoneyConverter().dumps([Money(5), Decimal("1.5")]) == b'[{"cents":5},"1.5"]'


# --- calls ------------------------------------------------------------------------------------


async def order_workflow(ctx: object, order: Order, when: dt.date, *, rush: bool = False) -> Line:
    raise NotImplementedError


def variadic(first: Line, *rest: uuid.UUID, **extra: Decimal) -> None:
    raise NotImplementedError


def test_decode_call_args_skips_ctx_and_converts_by_annotation(json: JSONConverter) -> None:
    order = sample_order()
    raw = json.loads(json.dumps([order, dt.date(2024, 1, 2)]))
    args, kwargs = decode_call_args(order_workflow, raw, {"rush": True}, skip_first=True)
    assert args == [order, dt.date(2024, 1, 2)]
    assert isinstance(args[0], Order)
    assert kwargs == {"rush": True}


def test_decode_call_args_without_skip_first_binds_from_the_first_parameter() -> None:
    args, _ = decode_call_args(variadic, [{"sku": "a", "price": "1"}], {})
    assert args == [Line("a", Decimal(1))]


def test_decode_call_args_converts_var_positional_and_var_keyword() -> None:
    ids = [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]
    args, kwargs = decode_call_args(variadic, [{"sku": "a", "price": "1"}, *ids], {"tip": "0.5"})
    assert args[1:] == [uuid.UUID(int=1), uuid.UUID(int=2)]
    assert kwargs == {"tip": Decimal("0.5")}


def test_decode_call_args_leaves_unbound_arguments_for_the_call_to_reject() -> None:
    order = sample_order()
    raw = [order, "2024-01-02", 3, 4]
    args, kwargs = decode_call_args(order_workflow, raw, {"bogus": 1}, skip_first=True)
    assert args == [order, dt.date(2024, 1, 2), 3, 4] and kwargs == {"bogus": 1}
    with pytest.raises(TypeError):
        order_workflow(None, *args, **kwargs).close()
    with pytest.raises(SerializationError, match="argument 'order' of order_workflow"):
        decode_call_args(order_workflow, ["not an order"], {}, skip_first=True)


def test_decode_call_args_with_unresolvable_forward_ref_converts_the_rest() -> None:
    def fn(a: Missing, b: dt.date) -> None:  # type: ignore[name-defined]  # noqa: F821
        raise NotImplementedError

    args, _ = decode_call_args(fn, [{"x": 1}, "2024-01-01"], {})
    assert args == [{"x": 1}, dt.date(2024, 1, 1)]


def test_return_hint_unwraps_coroutines_and_awaitables() -> None:
    def returns_awaitable() -> Awaitable[list[Line]]:
        raise NotImplementedError

    def unannotated():  # type: ignore[no-untyped-def]
        raise NotImplementedError

    assert return_hint(order_workflow) is Line
    assert return_hint(returns_awaitable) == list[Line]
    assert return_hint(unannotated) is Any


# --- codecs and sizes -------------------------------------------------------------------------


class XorCodec(PayloadCodec):
    def __init__(self, key: int) -> None:
        self.key = key

    def encode(self, data: bytes) -> bytes:
        return bytes(b ^ self.key for b in data)

    def decode(self, data: bytes) -> bytes:
        if data[:1] == b"{":
            raise ValueError("this looks like plain JSON, not XOR-encoded data")
        return bytes(b ^ self.key for b in data)


def test_identity_codec_is_a_no_op() -> None:
    codec = IdentityCodec()
    assert codec.encode(b"abc") == b"abc" and codec.decode(b"abc") == b"abc"


def test_codec_roundtrip_through_safe_helpers() -> None:
    codec = XorCodec(7)
    encoded = safe_encode(codec, b'{"a":1}', "start request")
    assert encoded != b'{"a":1}'
    assert safe_decode(codec, encoded, "start request") == b'{"a":1}'


def test_decode_failure_names_the_codec_and_the_configuration() -> None:
    # Not the codec's verdict on the data (it would raise PayloadError): perhaps passing, so
    # the engine retries the message instead of dead-lettering it.
    with pytest.raises(CodecUnavailableError) as info:
        safe_decode(XorCodec(7), b'{"a":1}', "history event 3 of 'order-42'")
    message = str(info.value)
    assert "history event 3 of 'order-42'" in message
    assert "test_codec.XorCodec" in message
    assert "check the key/codec configuration" in message
    assert isinstance(info.value.__cause__, ValueError)


def test_codec_returning_str_is_reported() -> None:
    class Broken(IdentityCodec):
        def decode(self, data: bytes) -> bytes:
            return data.decode()  # type: ignore[return-value]

    with pytest.raises(SerializationError, match=r"Broken.decode\(\) returned str"):
        safe_decode(Broken(), b"x", "result")


def test_check_size() -> None:
    check_size(1024, 1024, "result")
    with pytest.raises(PayloadTooLargeError) as info:
        check_size(1025, 1024, "result of activity 'render'")
    message = str(info.value)
    assert message.startswith("result of activity 'render' is 1025 bytes after encoding")
    assert "max_payload of 1024 bytes" in message
    assert "pass a reference" in message
