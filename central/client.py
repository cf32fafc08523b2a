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
    """Calls central's API; sends ``token`` (if any) as ``X-Auth-Token``."""

    def __init__(self, base_url: str, timeout: float = 10.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token

    def __repr__(self) -> str:  # never show the token
        return f"Client({self.base_url!r}, authenticated={self.token is not None})"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        return self.send(method, path, data, "application/json")

    def put_bytes(self, path: str, data: bytes, headers: dict[str, str] | None = None) -> Any:
        """PUT raw bytes (an object's content); the JSON answer."""
        return self.send("PUT", path, data, "application/octet-stream", headers)

    def send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One request; the JSON answer, or :class:`ApiFailure` naming the error."""
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        if self.token:
            req.add_header("X-Auth-Token", self.token)
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

    def login(self, user: str, password: str, project: str) -> dict[str, Any]:
        """Log in with a password; later calls carry the token. Returns the token body."""
        body = {"password": {"user": user, "password": password, "project": project}}
        issued = self.call("POST", "/v1/auth/tokens", body)
        self.token = issued["token"]
        return issued

    def login_app_credential(self, cred_id: str, secret: str) -> dict[str, Any]:
        body = {"application_credential": {"id": cred_id, "secret": secret}}
        issued = self.call("POST", "/v1/auth/tokens", body)
        self.token = issued["token"]
        return issued

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body if body is not None else {})

    def put(self, path: str, body: Any = None) -> Any:
        return self.call("PUT", path, body)

    def patch(self, path: str, body: Any = None) -> Any:
        return self.call("PATCH", path, body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)
