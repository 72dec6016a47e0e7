"""The one error type handlers raise, and the one function that renders it in the dialect of the API a
request came in on: OpenAI's envelope, Anthropic's, or Ollama's native ``{"error": ...}``."""

from __future__ import annotations

from typing import Any

from .jsonutil import dumps

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    409: "conflict_error",
    410: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
}

_DEFAULT_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "body_too_large",
    429: "rate_limit_exceeded",
    431: "headers_too_large",
    500: "internal_error",
    502: "upstream_error",
    503: "unavailable",
    504: "upstream_timeout",
}


def error_type(status: int) -> str:
    return _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


class HttpError(Exception):
    """An error with its HTTP status, OpenAI ``type`` and a short machine ``code``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _DEFAULT_CODES.get(status, "error")
        self.headers = headers or []
        self.extra = extra

    def payload(self) -> dict[str, Any]:
        return error_payload(self.status, self.message, self.code, self.extra)

    def body(self) -> bytes:
        return dumps(self.payload())


def error_payload(status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None) -> dict:
    err: dict[str, Any] = {
        "message": message,
        "type": error_type(status),
        "code": code or _DEFAULT_CODES.get(status, "error"),
    }
    if extra:
        err.update({k: v for k, v in extra.items() if v is not None})
    return {"error": err}


# Anthropic's error types by status (wire-formats §7.7, with the API's own 413 and 504 types); any other 4xx is
# an invalid request, any other 5xx an api_error.
_ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

DIALECTS = ("openai", "anthropic", "ollama")


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_payload(status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None) -> dict:
    """Anthropic's error shape. The router's machine ``code`` (and any extra detail, such as failover attempts)
    rides inside ``error`` as it does in the OpenAI envelope: the SDKs read ``type`` and ``message`` only."""
    err = {"type": anthropic_error_type(status), "message": message}
    err.update((k, v) for k, v in error_payload(status, message, code, extra)["error"].items() if k not in err)
    return {"type": "error", "error": err}


def render_error(err: HttpError, dialect: str) -> bytes:
    """``err`` as the body a client of ``dialect`` expects. Ollama's native shape is ``{"error": "<message>"}``
    (what the ollama library and Open WebUI read); the router's ``code`` and detail go beside it."""
    if dialect == "anthropic":
        return dumps(anthropic_payload(err.status, err.message, err.code, err.extra))
    if dialect == "ollama":
        detail = {k: v for k, v in (err.extra or {}).items() if v is not None and k not in ("error", "code")}
        return dumps({"error": err.message, "code": err.code, **detail})
    return err.body()


def not_found() -> HttpError:
    """The one JSON 404 for every miss. A new error each time: a shared exception object would collect the
    traceback of every raise, and with it the frames (requests, connections) of every miss, for good."""
    return HttpError(404, "Not found", code="not_found")
