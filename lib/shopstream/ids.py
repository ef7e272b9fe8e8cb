"""RFC 9562 UUIDv7 identifiers: producer-side minting and Spark column functions.

Layout (128 bits): unix_ts_ms (48) | ver=0111 (4) | rand_a (12) | var=10 (2) | rand_b (62).

Never truncate a UUIDv7: its first 12 hex digits are only the millisecond timestamp, so a
prefix such as `uuid7().hex[:12]` is the same for every id minted in the same millisecond.

Producer minting (`new_id`): the `uuid6` package builds the UUID objects. Its own `uuid7()`
keeps ids monotonic by adding one millisecond to the timestamp for each id minted within the
same millisecond, so at 10^5 ids/s the embedded time runs minutes ahead of the clock. We use
RFC 9562 §6.2 method 1 instead: a 42-bit counter (rand_a and the top 30 bits of rand_b),
re-seeded at random each new millisecond with its top bit clear, incremented within one; the
timestamp stays the real clock (it only moves ahead on the rare counter overflow or when the
clock steps back).

Spark (`uuid7_col`): a deterministic v7 UUID from a millisecond column and a hash of other
columns, built from built-in expressions only (two xxhash64 values with different salts).
"""

from __future__ import annotations

import secrets
import threading
import time

import uuid6
from pyspark.sql import Column
from pyspark.sql import functions as F

_COUNTER_BITS = 42
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1
_TAIL_BITS = 32  # random bits of rand_b below the counter
_MS_MASK = (1 << 48) - 1


class UUID7Minter:
    """Unique, monotonic UUIDv7 minting within a process (RFC 9562 §6.2, method 1)."""

    def __init__(self, clock_ms=None) -> None:
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def _next(self) -> tuple[int, int]:
        with self._lock:
            now = self._clock_ms()
            if now > self._last_ms:
                self._last_ms = now
                self._counter = secrets.randbits(_COUNTER_BITS - 1)  # top bit clear: room to grow
            else:
                self._counter += 1
                if self._counter > _COUNTER_MAX:  # >2^41 ids in one ms, or the clock stepped back
                    self._last_ms += 1
                    self._counter = secrets.randbits(_COUNTER_BITS - 1)
            return self._last_ms, self._counter

    def new(self) -> uuid6.UUID:
        ms, counter = self._next()
        value = ((ms & _MS_MASK) << 80) | ((counter >> 30) << 64) \
            | ((counter & ((1 << 30) - 1)) << _TAIL_BITS) | secrets.randbits(_TAIL_BITS)
        # value is ms<<80 | rand_a<<64 | rand_b; uuid6.UUID sets the version and variant bits
        return uuid6.UUID(int=value, version=7)


_default_minter = UUID7Minter()


def new_id() -> str:
    """A new UUIDv7 as the full 36-character string."""
    return str(_default_minter.new())


def uuid7_at(ts_ms: int, rand_bits: int) -> str:
    """A UUIDv7 string for a given millisecond and 74 caller-chosen bits (deterministic).

    Used by the event generator so that the same seed gives the same ids, minted at the
    event's own time as its producer would have.
    """
    rand_a = (rand_bits >> 62) & 0xFFF
    rand_b = rand_bits & ((1 << 62) - 1)
    return str(uuid6.UUID(int=((ts_ms & _MS_MASK) << 80) | (rand_a << 64) | rand_b, version=7))


def uuid7_timestamp_ms(value: str) -> int:
    """The millisecond timestamp of a UUIDv7 string."""
    return int(value.replace("-", "")[:12], 16)


# ---------------------------------------------------------------------------------------------
# Spark column functions (built-in expressions only)

_LOW62 = (1 << 62) - 1
_VARIANT = -(1 << 63)  # 0x8000000000000000 as a signed long: the variant's leading 1 bit


def uuid7_col(ts_ms: Column, *key_cols: Column) -> Column:
    """A deterministic RFC 9562 v7 UUID string from a millisecond column and key columns.

    timestamp bits = ts_ms; rand_a (12 bits) and rand_b (62 bits) from two xxhash64 values of
    the key columns with different salts. Same inputs, same id; ids sort by ts_ms.
    The two 64-bit halves are laid out as longs and formatted once (32 hex digits).
    """
    if not key_cols:
        raise ValueError("uuid7_col needs at least one key column to hash")
    h1 = F.xxhash64(F.lit("shopstream.uuid7.a"), *key_cols)
    h2 = F.xxhash64(F.lit("shopstream.uuid7.b"), *key_cols)
    # high half: 48-bit ms | version 7 | rand_a; low half: variant 10 | 62 bits of rand_b
    high = F.shiftleft(ts_ms.cast("long"), 16).bitwiseOR(F.lit(0x7000)).bitwiseOR(h1.bitwiseAND(F.lit(0xFFF)))
    low = h2.bitwiseAND(F.lit(_LOW62)).bitwiseOR(F.lit(_VARIANT))   # top bit set: always 16 digits
    digits = F.lower(F.concat(F.lpad(F.hex(high), 16, "0"), F.hex(low)))
    return F.concat_ws("-", F.substring(digits, 1, 8), F.substring(digits, 9, 4), F.substring(digits, 13, 4),
                       F.substring(digits, 17, 4), F.substring(digits, 21, 12))


def uuid7_ts_ms_col(uuid_col: Column) -> Column:
    """The 48-bit millisecond timestamp of a UUIDv7 string column, as a long."""
    digits = F.concat(F.substring(uuid_col, 1, 8), F.substring(uuid_col, 10, 4))
    return F.conv(digits, 16, 10).cast("long")


def uuid7_timestamp_col(uuid_col: Column) -> Column:
    """The timestamp of a UUIDv7 string column, as a Spark timestamp (UTC)."""
    return F.timestamp_millis(uuid7_ts_ms_col(uuid_col))
