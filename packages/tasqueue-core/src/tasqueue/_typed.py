"""Typed payloads and results: a handler's annotations turned into msgspec encoders and decoders.

A handler whose payload parameter is annotated ``bytes`` (or not at all) and that takes ``ctx``
is registered as it is: the bytes layer, at no cost. Any other handler is wrapped once, at
registration, in a bytes handler that decodes the payload into the annotated type (msgpack,
validated by msgspec), calls the function, and encodes what it returns.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import msgspec

from tasqueue.errors import PayloadError
from tasqueue.tasks import Handler, JobCtx, is_async_callable

T = TypeVar("T")

_NONE = type(None)
_encode = msgspec.msgpack.Encoder().encode


class Codec(Generic[T]):
    """Bytes for values of one type and back; the identity for ``bytes``."""

    __slots__ = ("_decode", "raw", "type")

    def __init__(self, type_: Any) -> None:
        self.type = type_
        self.raw = type_ is bytes
        self._decode: Callable[[bytes], Any] = msgspec.msgpack.Decoder(type_).decode

    def encode(self, value: T) -> bytes:
        if self.raw:
            return cast(bytes, value)
        return _encode(value)

    def decode(self, data: bytes) -> T:
        if self.raw:
            return cast(T, data)
        return cast(T, self._decode(data))

    def check(self, value: object, task: str) -> bytes:
        """Encode ``value``, a payload of ``task``, and prove it decodes as this type.

        Raises ``PayloadError`` with msgspec's reason if it does not.
        """
        if self.raw:
            if not isinstance(value, bytes):
                msg = f"the payload of task {task!r} must be bytes, got {type(value).__name__}"
                raise PayloadError(msg)
            return value
        try:
            data = _encode(value)
            self._decode(data)
        except (msgspec.EncodeError, msgspec.ValidationError, TypeError) as exc:
            msg = f"the payload of task {task!r} does not fit {_name(self.type)}: {exc}"
            raise PayloadError(msg) from None
        return data

    def __repr__(self) -> str:
        return f"Codec({_name(self.type)})"


RAW: Codec[bytes] = Codec(bytes)


@dataclass(frozen=True, slots=True)
class Shape:
    """What a handler's signature says: its payload and result types, and whether it takes ``ctx``."""

    payload: Codec[Any]
    result: Codec[Any] | None  # None: the handler returns nothing worth storing
    takes_ctx: bool
    is_async: bool
    default: Any = inspect.Parameter.empty  # the payload parameter's default, if it has one

    @property
    def raw(self) -> bool:
        """Whether the handler is a plain bytes handler that needs no wrapper."""
        return self.payload.raw and self.takes_ctx and (self.result is None or self.result.raw)


def shape_of(fn: Callable[..., Any], name: str) -> Shape:
    """Read the payload type, result type and arity of ``fn``."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    if not 1 <= len(params) <= 2:
        msg = f"the handler of task {name!r} must take (payload) or (payload, ctx), got {len(params)} positional parameter(s)"
        raise TypeError(msg)
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", fn)  # noqa: B004
    try:
        hints = typing.get_type_hints(target)
    except Exception as exc:  # NameError for a type defined inside a function, among others
        msg = (
            f"cannot read the annotations of the handler of task {name!r}: {exc}. "
            "Define payload and result types at module level (or drop `from __future__ import annotations`)"
        )
        raise TypeError(msg) from exc
    payload_type = hints.get(params[0].name, bytes)
    returns = hints.get("return", Any)
    result: Codec[Any] | None
    if returns is _NONE:
        result = None
    elif returns in (bytes, bytes | None) or (returns is Any and payload_type is bytes):
        result = RAW
    else:
        result = Codec(returns)  # a typed handler without a return annotation stores msgpack of Any
    default = params[0].default
    return Shape(Codec(payload_type), result, len(params) == 2, is_async_callable(fn), default)


def wrap(fn: Callable[..., Any], shape: Shape, name: str) -> Handler:
    """The bytes handler that runs ``fn`` for jobs of task ``name``.

    It runs once per job, so it is built flat: no helper calls beyond msgspec's own.
    """
    if shape.raw:
        return cast(Handler, fn)
    payload_codec, result = shape.payload, shape.result
    decode = payload_codec.decode if payload_codec.raw else payload_codec._decode
    # What a returned value becomes: None stores nothing, unless the result type admits None.
    encode: Callable[[Any], bytes | None]
    if result is None:
        encode = _nothing
    elif result.raw:
        encode = _same
    else:
        encode = _encode if _allows_none(result.type) else _encode_unless_none
    call: Callable[[Any, JobCtx], Any] = fn if shape.takes_ctx else (lambda value, ctx: fn(value))
    refused = f"the payload of task {name!r} does not fit {_name(payload_codec.type)}"

    if shape.is_async:

        async def run_async(payload: bytes, ctx: JobCtx) -> bytes | None:
            try:
                value = decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise PayloadError(f"{refused}: {exc}") from None
            return encode(await call(value, ctx))

        run_async.__qualname__ = getattr(fn, "__qualname__", name)
        return run_async

    def run_sync(payload: bytes, ctx: JobCtx) -> bytes | None:
        try:
            value = decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PayloadError(f"{refused}: {exc}") from None
        return encode(call(value, ctx))

    run_sync.__qualname__ = getattr(fn, "__qualname__", name)
    return run_sync


def _nothing(value: object) -> None:
    return None


def _same(value: bytes | None) -> bytes | None:
    return value


def _encode_unless_none(value: object) -> bytes | None:
    return None if value is None else _encode(value)


def _allows_none(type_: Any) -> bool:
    return type_ is _NONE or _NONE in typing.get_args(type_)


def _name(type_: Any) -> str:
    return getattr(type_, "__qualname__", None) or repr(type_)
