"""Errors of the scan client. Messages say what happened and what to do; they never carry credentials."""

from __future__ import annotations


class MdcaError(Exception):
    """Anything that stops a scan."""


class MdcaHTTPError(MdcaError):
    """The API answered with an error that retrying will not fix."""

    def __init__(self, message: str, *, status: int, path: str) -> None:
        super().__init__(message)
        self.status = status
        self.path = path


class AuthenticationError(MdcaHTTPError):
    """401: the API rejected the credentials."""


class PermissionDeniedError(MdcaHTTPError):
    """403: the credentials are valid but lack the rights to read activities."""


class BadRequestError(MdcaHTTPError):
    """400: the API refused the request; the message repeats the API's own."""


class RetriesExhaustedError(MdcaHTTPError):
    """A transient failure outlasted the retry budget (attempts or total time)."""

    def __init__(self, message: str, *, status: int, path: str, attempts: int) -> None:
        super().__init__(message, status=status, path=path)
        self.attempts = attempts


class ProtocolError(MdcaError):
    """The answer is not the Activities API's: a page that is not JSON, JSON of another shape, an absurd size.

    A proxy, a sign-in page or another service answers at the configured address; no retry changes that.
    """


class ScanStalledError(MdcaError):
    """The server's cursor stopped moving: going on would loop forever."""


class EndpointError(MdcaError):
    """The API's host could not be reached at all: it does not resolve, refuses connections, or fails TLS.

    On a scan's first request this is a configuration error (a mistyped MDCA_API_URL, a firewall, a proxy
    that intercepts TLS), which no retry fixes.
    """


class FilterIgnoredError(ProtocolError):
    """The server answered with records the request's own filters exclude (a `created` bound it ignored, say).

    Such an answer cannot be trusted to be the set asked for, so nothing of it is stored.
    """
