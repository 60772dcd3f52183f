"""The one exception family SlicerInsightLib raises.

Every failure the client meets (no server, a refusal, a crash on the server, a timeout, an answer
that is not what MONAI Label sends, a feature the server does not offer) becomes a subclass of
:class:`SlicerInsightError` whose message is one or two plain sentences a clinician can act on:
never a raw traceback, never an HTML page.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "SlicerInsightError",
    "ServerUnreachableError",
    "ServerTimeoutError",
    "RequestRejectedError",
    "AuthenticationError",
    "NotFoundError",
    "ServerFailureError",
    "MalformedAnswerError",
    "NotOfferedError",
    "NotReadyError",
    "InvalidInputError",
]


class SlicerInsightError(Exception):
    """Base class. ``str(err)`` is the user-facing message.

    Attributes:
        message: the user-facing message.
        url: the request URL, when the error came from an HTTP request.
        status: the HTTP status code, when the server answered.
    """

    def __init__(self, message: str, url: Optional[str] = None, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.status = status

    def __str__(self) -> str:
        return self.message


class ServerUnreachableError(SlicerInsightError):
    """No connection: nothing listens on the host/port, DNS failed, or the network is down."""


class ServerTimeoutError(SlicerInsightError):
    """The server accepted the connection but did not answer in time."""


class RequestRejectedError(SlicerInsightError):
    """The server answered HTTP 4xx; ``detail`` holds its explanation."""

    def __init__(self, message: str, url: Optional[str] = None, status: Optional[int] = None,
                 detail: Optional[str] = None) -> None:
        super().__init__(message, url, status)
        self.detail = detail


class AuthenticationError(RequestRejectedError):
    """HTTP 401/403: the token is missing, wrong, or lacks the role the call needs."""


class NotFoundError(RequestRejectedError):
    """HTTP 404: unknown model, image or label."""


class ServerFailureError(SlicerInsightError):
    """HTTP 5xx: the server failed while handling a valid request."""

    def __init__(self, message: str, url: Optional[str] = None, status: Optional[int] = None,
                 detail: Optional[str] = None) -> None:
        super().__init__(message, url, status)
        self.detail = detail


class MalformedAnswerError(SlicerInsightError):
    """The server answered, but not in the form a MONAI Label server answers (bad JSON, bad multipart,
    a missing field, an unreadable NIfTI)."""


class NotReadyError(RequestRejectedError):
    """The server offers it but cannot do it now: HTTP 409 (an active-learning strategy without its
    scores or its segmentation model yet), HTTP 429 (a training already runs), or a model that is
    not trained yet. Trying again later (or after training) can succeed."""


class NotOfferedError(SlicerInsightError):
    """The server does not offer what was asked: no training for a model, no active-learning strategy."""


class InvalidInputError(SlicerInsightError):
    """A bad argument on the client side (an empty image id, an unknown scan label, a missing file)."""
