"""Fixtures shared by the integration tests."""

from tests.host import make_ns

__all__ = ["make_ns"]
