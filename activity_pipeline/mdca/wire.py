"""The wire under the client: reading an answer's body within a deadline and a size, and the words for what
went wrong, with the server's own text redacted (`redact.server_text`).

No retries here and no decisions: `client` decides what a failure means.
"""

from __future__ import annotations

import contextlib
import email.utils
import socket
import threading
import time

import numpy as np
import requests
import urllib3

from activity_pipeline.mdca.errors import ProtocolError
from activity_pipeline.mdca.redact import server_text

# A scan page of 5,000 records is about 17 MB; no answer of the API comes near this. A larger Content-Length is
# a server that is not the API (or lies), and allocating it would fail anyway.
MAX_BODY_BYTES = 256 << 20


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Deadline:
    """Ends an attempt that outlives its deadline, however the bytes trickle: when it fires, the answer's socket
    is shut down, which ends any read blocked on it. (A timeout per read cannot: each trickled byte resets it.)"""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._timer: threading.Timer | None = None

    def watch(self, response: requests.Response) -> None:
        sock = getattr(getattr(response.raw, "connection", None), "sock", None)
        if sock is None:
            return

        def fire() -> None:
            self.expired = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        self._timer = threading.Timer(max(0.0, self.at - time.monotonic()), fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _announced_length(response: requests.Response) -> int | None:
    length = response.headers.get("Content-Length")
    if length is None or not length.strip().isdigit():
        return None
    n = int(length)
    if n > MAX_BODY_BYTES:
        response.close()
        raise ProtocolError(
            f"the server announced an answer of {n:,} bytes (Content-Length), more than any answer of the "
            f"Activities API (a page is about 17 MB; {MAX_BODY_BYTES >> 20} MiB at the most): it is not the API, "
            "or something between misbehaves. Check MDCA_API_URL and any proxy on the way."
        )
    return n


def _read_unsized(response: requests.Response) -> bytes:
    """A body without a usable length (chunked or compressed), capped at MAX_BODY_BYTES."""
    chunks, size = [], 0
    try:
        for chunk in response.iter_content(1 << 16):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ProtocolError(
                    f"the server sent more than {MAX_BODY_BYTES >> 20} MiB in one answer, more than any answer of "
                    "the Activities API: it is not the API, or something between misbehaves. Check MDCA_API_URL."
                )
            chunks.append(chunk)
    except requests.ConnectionError as exc:
        if isinstance(exc.args[0] if exc.args else None, urllib3.exceptions.ReadTimeoutError):
            raise requests.exceptions.ReadTimeout(str(exc)) from None
        raise
    finally:
        response.close()
    content = b"".join(chunks)
    response._content = content  # type: ignore[attr-defined]  # for .json() and .text in error messages
    return content


def read_body(response: requests.Response) -> bytes | np.ndarray:
    """The whole body, read straight into one buffer when its length is known (pages are ~17 MB).

    The buffer (a numpy byte array: msgspec decodes from it, and the `raw` column is later built inside it) is
    not zeroed first: bytearray(n) would write 17 MB of zeros while holding the GIL, and the kernel hands over
    zeroed pages anyway, as the socket read touches them with the GIL released. (Arrow's pool measured slower
    and 30 MiB larger at peak.) Other statuses (small error bodies) are returned as bytes.
    """
    length = _announced_length(response)
    encoded = response.headers.get("Content-Encoding", "identity") != "identity"
    if length is None or encoded:
        return _read_unsized(response)
    buffer = np.empty(length, dtype=np.uint8)
    view = memoryview(buffer)
    got = 0
    try:
        # http.client's response under urllib3's reads straight into the buffer. urllib3's own read and
        # readinto copy every chunk once more, after http.client's read(amt) has copied it once: for a 17 MB
        # page that was 34 MB of fresh memory and three copies, a fifth of the asset's time on two cores.
        readinto = getattr(getattr(response.raw, "_fp", None), "readinto", None) or response.raw.readinto
        while got < len(buffer):
            n = readinto(view[got:])
            if not n:
                break
            got += n
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        raise requests.exceptions.ReadTimeout(str(exc)) from None
    except (urllib3.exceptions.ProtocolError, OSError) as exc:
        raise requests.ConnectionError(str(exc)) from None
    finally:
        view.release()
        response.close()
    if got < len(buffer):
        raise requests.exceptions.ChunkedEncodingError(f"body truncated at {got} of {len(buffer)} bytes")
    if response.status_code != 200:
        # requests' helpers (.json(), .text), which error messages use, look at _content and want bytes.
        response._content = buffer.tobytes()  # type: ignore[attr-defined]
        return response._content  # type: ignore[attr-defined]
    return buffer


def unreachable(exc: requests.ConnectionError) -> tuple[str | None, str] | None:
    """(host, why) when no connection could be made at all (name resolution, refusal); None for other failures."""
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    conn = getattr(reason, "conn", None)
    host = getattr(conn, "host", None)
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return host, "the host name does not resolve (DNS)"
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        if "refused" in str(reason).lower():
            return host, f"port {getattr(conn, 'port', '?')} refused the connection (nothing listens there)"
        return host, f"no connection could be made ({str(reason).split(': ', 1)[-1][:200]})"
    return None


def ssl_reason(exc: Exception) -> str:
    text = str(exc)
    marker = "certificate verify failed"
    return text[text.index(marker) :].split("(")[0].strip() if marker in text else type(exc).__name__


# What OpenSSL says when the other end answers a TLS hello in plain HTTP.
PLAIN_HTTP_MARKERS = ("wrong version number", "record layer failure", "packet length too long", "http request")


def content_kind(response: requests.Response) -> str:
    return server_text(response.headers.get("Content-Type", "no Content-Type").split(";")[0].strip())[:80]


def detail(response: requests.Response, secrets: tuple[str, ...] = ()) -> str:
    """The API's own error message (JSON {"detail": ...}), or a short note for other bodies; redacted."""
    try:
        payload = response.json()
    except ValueError:
        return f"{content_kind(response)} body of {len(response.content)} bytes"
    if isinstance(payload, dict) and "detail" in payload:
        return server_text(str(payload["detail"]), secrets)
    return server_text(str(payload), secrets)
