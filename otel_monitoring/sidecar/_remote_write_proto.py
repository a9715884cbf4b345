"""Hand-written protobuf encoding of Prometheus remote write 1.0's ``WriteRequest``.

Why by hand: the message has four small types (``WriteRequest``, ``TimeSeries``, ``Label``, ``Sample``), no
package ships compiled classes for it, and building each sample as a protobuf message object costs more than
writing its 11 to 20 bytes directly. The encoding is plain proto3 wire format (tests decode it with protobuf's
own parser), from prometheus/prometheus ``prompb/remote.proto`` and ``prompb/types.proto``::

    message WriteRequest { repeated TimeSeries timeseries = 1; }        // 2 reserved, 3 metadata: not sent
    message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    message Label        { string name = 1; string value = 2; }
    message Sample       { double value = 1; int64 timestamp = 2; }     // milliseconds since the epoch
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = ["encode_label_set", "encode_time_series", "encode_write_request"]

# Tags are (field_number << 3) | wire_type: wire type 2 is length-delimited, 1 is 64-bit, 0 is varint.
_TAG_1_BYTES: Final = b"\x0a"
_TAG_2_BYTES: Final = b"\x12"
_TAG_1_FIXED64: Final = b"\x09"
_TAG_2_VARINT: Final = b"\x10"
_pack_double = struct.Struct("<d").pack
_UINT64_MASK: Final = (1 << 64) - 1


def _varint(value: int) -> bytes:
    # int64 on the wire: a negative number is its 64-bit two's complement (10 bytes); timestamps never are.
    value &= _UINT64_MASK
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def encode_label_set(labels: Sequence[tuple[str, str]]) -> bytes:
    """The ``labels`` fields of one ``TimeSeries``, already sorted by the caller (the spec requires it)."""
    parts = []
    for name, value in labels:
        name_bytes = name.encode()
        value_bytes = value.encode()
        label = _TAG_1_BYTES + _varint(len(name_bytes)) + name_bytes + _TAG_2_BYTES + _varint(len(value_bytes))
        parts.append(_length_delimited(_TAG_1_BYTES, label + value_bytes))
    return b"".join(parts)


def encode_time_series(encoded_labels: bytes, samples: Iterable[tuple[float, int]]) -> bytes:
    """One ``TimeSeries`` from :func:`encode_label_set`'s bytes and ``(value, timestamp_ms)`` samples."""
    parts = [encoded_labels]
    for value, timestamp_ms in samples:
        # Both fields are always written, even when 0: proto3 decoders read an explicit default the same way.
        sample = _TAG_1_FIXED64 + _pack_double(value) + _TAG_2_VARINT + _varint(timestamp_ms)
        parts.append(_TAG_2_BYTES + _varint(len(sample)) + sample)
    return b"".join(parts)


def encode_write_request(series: Iterable[bytes]) -> bytes:
    """A ``WriteRequest`` from encoded ``TimeSeries`` (:func:`encode_time_series`); not yet compressed."""
    return b"".join(_length_delimited(_TAG_1_BYTES, one) for one in series)
