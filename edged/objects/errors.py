"""The object store's exceptions: a refused request, a corrupt object, a missing backend."""

from __future__ import annotations


class ObjectError(Exception):
    """A refused request: ``field`` names the culprit, ``status`` is the HTTP status."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


class ObjectCorrupt(Exception):
    """Stored bytes do not hash to the object's etag (the object is marked corrupt)."""

    def __init__(self, bucket: str, key: str, message: str) -> None:
        super().__init__(message)
        self.bucket = bucket
        self.key = key
        self.message = message


class BackendUnavailable(Exception):
    """The blob backend cannot be used; the message says exactly why."""
