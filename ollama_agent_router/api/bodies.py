"""Request bodies: JSON read with limits on size and nesting, and the chat schema the OpenAI-shaped doors share."""

from __future__ import annotations

from typing import Any, Iterable

from ..errors import HttpError
from ..http.messages import Request
from ..jsonutil import JsonLimit, parse_json_sliced

# Deeper JSON is refused: re-encoding it later (forwarding, storing a job) could hit Python's recursion limit.
MAX_JSON_DEPTH = 200
# More values are refused: each costs the parse (and whatever walks the body after it) a Python object, so
# a few megabytes of `[],[],...` would hold the event loop for seconds. Real chats hold thousands.
MAX_JSON_VALUES = 100_000


async def read_json(req: Request, *, limit: int | None = None) -> Any:
    """The request body as JSON whatever the Content-Type says (``curl -d`` sends form encoding).

    An empty body is ``None``: Kong sends bodiless GET/DELETE with ``content-type: application/json``.
    """
    raw = await req.body(limit)
    if not raw.strip():
        return None
    try:
        return await parse_json_sliced(raw.decode("utf-8"), MAX_JSON_VALUES, MAX_JSON_DEPTH)
    except UnicodeDecodeError:
        raise HttpError(400, "Request body is not valid UTF-8", code="invalid_json") from None
    except JsonLimit as e:
        raise HttpError(400, f"Request body JSON {e}", code="invalid_json") from None
    except ValueError as e:
        raise HttpError(400, f"Malformed JSON in request body: {e}", code="invalid_json") from None


async def read_json_object(req: Request, *, limit: int | None = None) -> dict:
    body = await read_json(req, limit=limit)
    if not isinstance(body, dict):
        raise HttpError(400, "Request body must be a JSON object", code="invalid_body")
    return body


def check_messages(messages: Any, missing: str) -> None:
    """A non-empty array of objects with a string role; ``missing`` says so when it is absent or empty."""
    if not isinstance(messages, list) or not messages:
        raise HttpError(400, missing, code="invalid_messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise HttpError(400, f"messages[{i}] must be an object with a string role", code="invalid_messages")


def check_types(body: dict, members: Iterable[tuple[str, type | tuple[type, ...], str]]) -> None:
    """Each of ``members`` (name, accepted types, what to call them) that the body sets, null aside, has the
    type the door reads it as."""
    for key, kinds, what in members:
        if body.get(key) is not None and not isinstance(body[key], kinds):
            raise HttpError(400, f"{key} must be {what}", code="invalid_body")


def validate_chat_body(body: Any) -> dict:
    """The original's chat schema (§2.3), with readable messages instead of a zod dump."""
    if not isinstance(body, dict):
        raise HttpError(400, "Request body must be a JSON object", code="invalid_body")
    check_messages(body.get("messages"), "messages must be a non-empty array")
    if "model" in body and not isinstance(body["model"], str):
        raise HttpError(400, "model must be a string", code="invalid_body")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise HttpError(400, "stream must be a boolean", code="invalid_body")
    if "router" in body and not isinstance(body["router"], dict):
        raise HttpError(400, "router must be an object", code="invalid_router_options")
    return body
