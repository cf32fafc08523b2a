"""API errors: one JSON shape, ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart, jsonify, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from central.refusal import Refusal

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API reports to its caller."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{kind} {ident!r} does not exist", kind=kind, id=ident)


def conflict(message: str, **details: Any) -> ApiError:
    return ApiError(409, "conflict", message, **details)


def refusal(exc: Refusal) -> ApiError:
    """A :class:`Refusal` as the API reports it: 409 or 413 with the field, 400 listing it."""
    if exc.status == 409:
        return conflict(exc.message, field=exc.field)
    code = "request_entity_too_large" if exc.status == 413 else "invalid_request"
    fields = [{"field": exc.field, "problem": exc.message}]
    return ApiError(exc.status, code, exc.message, fields=fields)


def _body(code: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _validation_details(exc: RequestSchemaValidationError) -> tuple[str, dict[str, Any]]:
    inner = exc.validation_error
    errors = getattr(inner, "errors", None)
    if callable(errors):
        fields = []
        for err in errors():
            path = ".".join(str(p) for p in err.get("loc", ())) or "(body)"
            fields.append({"field": path, "problem": err.get("msg", "invalid")})
        first = fields[0] if fields else {"field": "(body)", "problem": "invalid"}
        return f"invalid field {first['field']!r}: {first['problem']}", {"fields": fields}
    return "request body must be a JSON object", {"fields": [{"field": "(body)"}]}


def register(app: Quart) -> None:
    """Install handlers so every error leaves as the JSON shape above."""

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError):  # type: ignore[no-untyped-def]
        return jsonify(_body(exc.code, exc.message, exc.details)), exc.status

    @app.errorhandler(Refusal)
    async def _refused(exc: Refusal):  # type: ignore[no-untyped-def]
        return await _api_error(refusal(exc))

    @app.errorhandler(RequestSchemaValidationError)
    async def _invalid(exc: RequestSchemaValidationError):  # type: ignore[no-untyped-def]
        message, details = _validation_details(exc)
        return jsonify(_body("invalid_request", message, details)), 400

    @app.errorhandler(HTTPException)
    async def _http(exc: HTTPException):  # type: ignore[no-untyped-def]
        if exc.code == 400 and request.is_json:
            # Quart's JSON parser failed on the body.
            details = {"fields": [{"field": "(body)", "problem": "not valid JSON"}]}
            message = "request body is not valid JSON"
            return jsonify(_body("invalid_request", message, details)), 400
        code = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(_body(code, exc.description or exc.name or "error", {})), exc.code or 500

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error")
        return jsonify(_body("internal_error", "internal error; see central's log", {})), 500
