"""A small client for central's HTTP API, used by the CLI, the demo and the tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class ApiFailure(Exception):
    """central answered with an error (or did not answer)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Client:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)["error"]
                raise ApiFailure(exc.code, err["code"], err["message"]) from None
            except (ValueError, KeyError, TypeError):
                text = raw[:200].decode(errors="replace")
                raise ApiFailure(exc.code, "http_error", text) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApiFailure(0, "unreachable", f"{self.base_url}: {exc}") from None
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)
