"""One libvirt call at a time, with libvirt's and the OS's errors in the driver's own terms."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import libvirt


@contextmanager
def serialised(
    lock: threading.Lock | threading.RLock, error: type[Exception], resource_id: str, what: str
) -> Iterator[None]:
    """Hold ``lock``; a libvirt or OS error becomes ``error(resource_id, "<what>: ...")``
    (``error`` itself passes through)."""
    with lock:
        try:
            yield
        except error:
            raise
        except libvirt.libvirtError as exc:
            raise error(resource_id, f"{what}: libvirt: {exc}") from exc
        except OSError as exc:
            raise error(resource_id, f"{what}: {exc}") from exc
