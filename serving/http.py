"""What the API does at its edge, before and after any route: the bearer token, the body-size bound, and every
error as one JSON object with a message and no traceback.

Error bodies are `{"error": code, "message": text}` (422s add `details`, one entry per problem). Nothing a client
sends produces a 500: bad input is 4xx, a full queue or a replica that went away is 503 with Retry-After.
"""

from __future__ import annotations

import hmac
import logging
import os

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

TOKEN_ENV = "SENTIMENT_API_TOKEN"
HEALTH_PATHS = ("/healthz", "/readyz")  # open without the token: load balancers and probes call them
BODY_METHODS = ("POST", "PUT", "PATCH")
STATUS_CODES = {400: "invalid_json", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}

logger = logging.getLogger("ray.serve")


class ApiError(Exception):
    """A request the API refuses or cannot answer now: the status, a short code and a message naming the fix."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, details: list | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers, self.details = headers or {}, details


def error_response(status: int, code: str, message: str, headers: dict | None = None, details=None) -> JSONResponse:
    body = {"error": code, "message": message, **({"details": details} if details else {})}
    return JSONResponse(body, status_code=status, headers=headers)


def api_token() -> str | None:
    """The token every route but the health checks requires, from the replica's environment (None: open)."""
    return os.environ.get(TOKEN_ENV) or None


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `Bearer <token>`, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class RequestGuard:
    """Plain ASGI middleware: refuses an unauthenticated request (401) before reading anything, and a body
    over `max_body_bytes` (413) before it is all read, whether or not it declares its length; then hands
    the body it read on to the app."""

    def __init__(self, app, token: str | None, max_body_bytes: int):
        self.app, self.token, self.max_body_bytes = app, token, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if self.token and path not in HEALTH_PATHS and not authorized(headers.get("authorization"), self.token):
            message = f"Send the service's token as `Authorization: Bearer <token>` (the server's {TOKEN_ENV})."
            refusal = error_response(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})
            return await refusal(scope, receive, send)
        if scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        body = await self._bounded_body(headers.get("content-length"), receive)
        if body is None:
            message = (
                f"The request body is over {self.max_body_bytes:,} bytes. Send fewer or shorter reviews per "
                "request, or score files with sentiment-bulk."
            )
            return await error_response(413, "body_too_large", message)(scope, receive, send)
        return await self.app(scope, replay(body, receive), send)

    async def _bounded_body(self, declared: str | None, receive) -> bytes | None:
        """The whole body, or None as soon as it is (or says it will be) longer than the bound."""
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return b"".join(chunks)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)


def replay(body: bytes, receive):
    """An ASGI receive that gives the app `body` once, then waits on the real one (for the disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def validation_details(errors: list[dict]) -> list[dict]:
    """FastAPI's validation errors as {field, problem}, without echoing the input back."""
    return [
        {
            "field": ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body",
            "problem": error["msg"],
        }
        for error in errors
    ]


def install_error_handlers(api: FastAPI) -> None:
    """Every error the app can raise as one JSON object: ApiError as it says, FastAPI's validation errors and
    unreadable JSON as 422, unknown routes and methods as 404 and 405, and anything else as a 500 that is logged
    here and says nothing of the code."""

    @api.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError):
        return error_response(error.status, error.code, error.message, error.headers, error.details)

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError):
        details = validation_details(error.errors())
        message = "The request does not match the API's schema (see /docs): " + "; ".join(
            f"{detail['field']}: {detail['problem']}" for detail in details[:5]
        )
        return error_response(422, "invalid_request", message, details=details)

    @api.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException):
        # FastAPI answers 400 for a body it could not parse at all (e.g. JSON nested too deep): invalid input, 422.
        status = 422 if error.status_code == 400 else error.status_code
        code = STATUS_CODES.get(error.status_code, f"http_{status}")
        return error_response(status, code, str(error.detail), getattr(error, "headers", None))

    @api.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        logger.exception("Unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "The server failed on this request; the error is in its log.")
