"""The one exception pure central logic raises to refuse a request.

IPAM, image checks and placement know nothing of HTTP; they raise
:class:`Refusal` naming the field and what is wrong, and the API's error
handler (``central.api.errors``) turns it into the JSON error: 400 with the
field listed, 409 with the field, or 413.
"""

from __future__ import annotations


class Refusal(Exception):
    """A refused request: ``field`` names the culprit; ``status`` 400, 409 or 413."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status
