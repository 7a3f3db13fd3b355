"""Just enough CBOR (RFC 8949) to read and rewrite the emulator's RPC v2 CBOR answers in the
fault proxy: maps, arrays, texts, bytes, integers, floats, booleans, null, epoch timestamps."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any


def loads(data: bytes) -> Any:
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the CBOR value")
    return value


def _length(data: bytes, at: int, info: int) -> tuple[int, int]:
    if info < 24:
        return info, at
    size = {24: 1, 25: 2, 26: 4, 27: 8}[info]
    return int.from_bytes(data[at : at + size], "big"), at + size


def _decode(data: bytes, at: int) -> tuple[Any, int]:
    head = data[at]
    major, info = head >> 5, head & 0x1F
    at += 1
    if major == 7:
        simple: dict[int, Any] = {20: False, 21: True, 22: None, 23: None}
        if info in simple:
            return simple[info], at
        formats = {25: (">e", 2), 26: (">f", 4), 27: (">d", 8)}
        fmt, size = formats[info]
        return struct.unpack(fmt, data[at : at + size])[0], at + size
    if info == 31:  # indefinite length
        items: list[Any] = []
        while data[at] != 0xFF:
            item, at = _decode(data, at)
            items.append(item)
        at += 1
        if major == 4:
            return items, at
        if major == 5:
            return dict(zip(items[::2], items[1::2], strict=True)), at
        joined = b"".join(items) if major == 2 else "".join(items)
        return joined, at
    length, at = _length(data, at, info)
    if major == 0:
        return length, at
    if major == 1:
        return -1 - length, at
    if major in (2, 3):
        raw = data[at : at + length]
        return (raw if major == 2 else raw.decode()), at + length
    if major == 4:
        items = []
        for _ in range(length):
            item, at = _decode(data, at)
            items.append(item)
        return items, at
    if major == 5:
        mapping = {}
        for _ in range(length):
            key, at = _decode(data, at)
            mapping[key], at = _decode(data, at)
        return mapping, at
    if major == 6:  # a tag: 1 is an epoch timestamp
        value, at = _decode(data, at)
        return (datetime.fromtimestamp(value, UTC) if length == 1 else value), at
    raise ValueError(f"CBOR major type {major}")


def _head(major: int, length: int) -> bytes:
    if length < 24:
        return bytes([major << 5 | length])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if length < 1 << (8 * size):
            return bytes([major << 5 | info]) + length.to_bytes(size, "big")
    raise ValueError("too long")


def dumps(value: Any) -> bytes:
    if value is None:
        return b"\xf6"
    if value is True or value is False:
        return b"\xf5" if value else b"\xf4"
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, float):
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        return _head(3, len(raw)) + raw
    if isinstance(value, bytes):
        return _head(2, len(value)) + value
    if isinstance(value, datetime):
        return b"\xc1" + dumps(value.timestamp())
    if isinstance(value, list):
        return _head(4, len(value)) + b"".join(dumps(item) for item in value)
    if isinstance(value, dict):
        return _head(5, len(value)) + b"".join(dumps(k) + dumps(v) for k, v in value.items())
    raise TypeError(f"cannot encode {type(value).__name__}")
