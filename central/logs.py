"""Logging for both the API and the hub: one line per event, with the request id."""

from __future__ import annotations

import logging
import sys

from quart import g, has_request_context


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record ('-' outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = "-"
        if has_request_context():
            rid = getattr(g, "request_id", "-")
        record.request_id = rid
        return True


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [req=%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
