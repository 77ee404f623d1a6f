"""The one application error type, and its translation to HTTP.

Services raise `ApplicationError`; the DRF handler below and the WebSocket consumer each
translate it into their transport's error shape.
"""

from collections.abc import Sequence
from typing import Any

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApplicationError(Exception):
    """A rule of the service refused the request. `code` is a WebSocket error code."""

    code = "validation_error"
    http_status = status.HTTP_400_BAD_REQUEST

    def __init__(self, detail: str | Sequence[str], *, field: str | None = None) -> None:
        # Several reasons (a password's, say) are one list item each over HTTP, as DRF's own
        # field errors are, and one sentence after another where one string is wanted.
        self.details = [detail] if isinstance(detail, str) else list(detail)
        self.detail = " ".join(self.details)
        super().__init__(self.detail)
        self.field = field

    def as_body(self) -> dict[str, Any]:
        if self.field:
            return {self.field: self.details}
        return {"detail": self.detail}


class NotFound(ApplicationError):
    """No such object, or one the caller may not see: the two are never told apart."""

    code = "not_found"
    http_status = status.HTTP_404_NOT_FOUND

    def __init__(self, detail: str = "Not found.") -> None:
        super().__init__(detail)


class Forbidden(ApplicationError):
    """A member asked for what only the chat's owner, or the message's author, may do."""

    code = "forbidden"
    http_status = status.HTTP_403_FORBIDDEN

    def __init__(self, detail: str = "You may not do this.") -> None:
        super().__init__(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        return Response(exc.as_body(), status=exc.http_status)
    return exception_handler(exc, context)
