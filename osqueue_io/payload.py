"""Typed payloads: turning a queue's items into job bytes and back, with cattrs + orjson.

Raw ``bytes`` pass through untouched; anything else (attrs classes, dataclasses, plain
JSON values such as ``dict``, ``list``, ``str``, ``int``) is unstructured by cattrs and
encoded as JSON, so jobs pushed by one program can be read by another.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

import cattrs
import orjson
from cattrs.preconf.orjson import make_converter

from osqueue_core import InvalidArgument

T = TypeVar("T")

_default_converter = make_converter()


class PayloadDecodeError(InvalidArgument):
    """A job's payload does not decode into the queue's item type."""


class PayloadCodec(Generic[T]):
    """Encodes items of ``item_type`` to bytes and decodes them back."""

    def __init__(self, item_type: type[T], converter: cattrs.Converter | None = None) -> None:
        self.item_type = item_type
        self._converter = converter or _default_converter
        self._raw = item_type is bytes

    def encode(self, item: T) -> bytes:
        if self._raw:
            if not isinstance(item, bytes):
                raise InvalidArgument(f"this queue carries bytes, got {type(item).__name__}")
            return item
        try:
            # A right-sized copy: the payload lives in the broker's table for the job's
            # life, and orjson over-allocates small results (~4 KB each).
            return bytes(
                memoryview(orjson.dumps(self._converter.unstructure(item, self.item_type)))
            )
        except (TypeError, orjson.JSONEncodeError) as error:
            raise InvalidArgument(f"cannot encode {item!r} as JSON: {error}") from error

    def decode(self, data: bytes) -> T:
        if self._raw:
            return cast(T, data)
        try:
            raw: Any = orjson.loads(data)
            return self._converter.structure(raw, self.item_type)
        except Exception as error:
            detail = (
                "; ".join(cattrs.transform_error(error))
                if isinstance(error, cattrs.BaseValidationError)
                else str(error)
            )
            name = getattr(self.item_type, "__name__", str(self.item_type))
            raise PayloadDecodeError(f"payload does not decode into {name}: {detail}") from None
