"""TOSCA ``scalar-unit.size`` ("512 MB", "1 GiB", "1.75 GiB") to MiB or GiB.

Units follow TOSCA 1.2 §3.3.6.4: B, kB, KiB, MB, MiB, GB, GiB, TB, TiB, case-insensitive;
kB/MB/GB/TB are powers of 1000 and KiB/MiB/GiB/TiB powers of 1024. A size converts to
the wanted unit exactly and is then rounded UP to a whole unit (a guest gets at least
what the descriptor asks): "512 MB" is 488.28 MiB, so 489 MiB; "1 GB" is 0.93 GiB, so
1 GiB; "0 GB" is 0."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "tib": 1024**4,
}
MIB = 1024**2
GIB = 1024**3
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*$")
EXPECTED = "a size like '512 MiB' or '1 GB' (units B, kB, KiB, MB, MiB, GB, GiB, TB, TiB)"


class BadSize(ValueError):
    pass


def size_bytes(value: object) -> int:
    """Bytes of a scalar-unit.size (rounded up to a whole byte)."""
    if not isinstance(value, str):
        raise BadSize(f"expected {EXPECTED}, got {type(value).__name__} {value!r}")
    m = _SIZE.match(value)
    if m is None or m.group(2).lower() not in UNITS:
        raise BadSize(f"expected {EXPECTED}, got {value!r}")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise BadSize(f"expected {EXPECTED}, got {value!r}") from None
    return math.ceil(number * UNITS[m.group(2).lower()])


def size_in(value: object, unit: int) -> int:
    """The size in whole ``unit``s (MIB or GIB), rounded up."""
    return -(-size_bytes(value) // unit)
