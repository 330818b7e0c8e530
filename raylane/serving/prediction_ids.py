"""Prediction ids: one per predicted row, returned to the client and logged with the row.

An id is a UUID version 7 (RFC 9562) as 32 lowercase hex characters: 48 bits of Unix time in
milliseconds, then 74 random bits. Ids sort by time (to the millisecond) and need no coordination
between replicas; ``uuid.UUID(hex=id)`` parses one. All rows of a request share the timestamp and
get their random bits from one ``os.urandom`` call (~1.6 us for one row, ~0.15 ms for 1,000).
"""

from __future__ import annotations

import os
import time

import numpy as np

_RAND80 = (1 << 80) - 1
# version 7 in bits 76-79, variant 0b10 in bits 62-63 (counted from the least significant bit)
_CLEAR = ~((0xF << 76) | (0x3 << 62))
_SET = (0x7 << 76) | (0x2 << 62)
_VECTOR_FROM = 8  # from this many rows numpy is faster than Python ints


def new_prediction_ids(n: int) -> list[str]:
    """``n`` fresh UUIDv7 ids (hex, no dashes), one per row of a request."""
    ms = time.time_ns() // 1_000_000
    if n < _VECTOR_FROM:
        rand = int.from_bytes(os.urandom(10 * n), "big") if n else 0
        out = []
        for _ in range(n):
            out.append(f"{(((ms << 80) | (rand & _RAND80)) & _CLEAR) | _SET:032x}")
            rand >>= 80
        return out
    b = np.empty((n, 16), np.uint8)
    b[:, :6] = np.frombuffer((ms & (2**48 - 1)).to_bytes(6, "big"), np.uint8)
    b[:, 6:] = np.frombuffer(os.urandom(10 * n), np.uint8).reshape(n, 10)
    b[:, 6] = (b[:, 6] & 0x0F) | 0x70
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80
    h = b.tobytes().hex()
    return [h[i : i + 32] for i in range(0, 32 * n, 32)]
