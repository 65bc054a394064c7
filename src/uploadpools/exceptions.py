"""One error root carrying an HTTP status. Domain errors subclass it; services never import FastAPI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class UploadPoolsError(Exception):
    status_code: int = 500
    title: str = "Internal error"
    type_slug: str = "internal"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title


class BadRequest(UploadPoolsError):
    status_code = 400
    title = "Bad request"
    type_slug = "bad-request"


class Unauthorized(UploadPoolsError):
    status_code = 401
    title = "Unauthorized"
    type_slug = "unauthorized"


class Forbidden(UploadPoolsError):
    status_code = 403
    title = "Forbidden"
    type_slug = "forbidden"


class NotFound(UploadPoolsError):
    status_code = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(UploadPoolsError):
    status_code = 409
    title = "Conflict"
    type_slug = "conflict"


class PayloadTooLarge(UploadPoolsError):
    status_code = 413
    title = "Payload too large"
    type_slug = "payload-too-large"


class ValidationFailed(UploadPoolsError):
    """422 naming every bad field."""

    status_code = 422
    title = "Validation failed"
    type_slug = "validation"

    def __init__(self, errors: list[FieldError], detail: str | None = None) -> None:
        self.errors = errors
        super().__init__(detail or "; ".join(f"{e.field}: {e.message}" for e in errors))

    @classmethod
    def one(cls, field: str, message: str) -> ValidationFailed:
        return cls([FieldError(field, message)])
