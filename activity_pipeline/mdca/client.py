"""HTTP to the Activities API: one session, explicit timeouts, a shared rate limiter, bounded retries.

Retries are tenacity's (exponential backoff with full jitter, capped by attempts and by total time). They
wrap the whole exchange, decoding included, because the service's failures are not all HTTP statuses:
connections drop mid-body and proxies answer 200 with a page that is not JSON. Those are retried like a
503. What retrying cannot fix (400, 401, 403, 404) fails at once with a message that says what to check.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import numpy as np
import requests
import tenacity
import urllib3

from activity_pipeline.mdca.auth import EntraAuth, TokenAuth, auth_for
from activity_pipeline.mdca.errors import (
    AuthenticationError,
    BadRequestError,
    EndpointError,
    MdcaHTTPError,
    PermissionDeniedError,
    RetriesExhaustedError,
)
from activity_pipeline.mdca.ratelimit import RateLimiter
from activity_pipeline.mdca.settings import MdcaSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

ACTIVITIES_PATH = "/api/v1/activities/"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying one request. Every figure is a cap; the first success ends it."""

    max_attempts: int = 8
    max_seconds: float = 900.0
    backoff_first: float = 1.0
    backoff_max: float = 60.0
    # 429 without Retry-After: wait this long, doubling per attempt (capped by backoff_max).
    throttle_default: float = 10.0


@dataclass
class RequestStats:
    """What the client did, for logs and Dagster metadata. Thread-safe."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    throttle_wait_seconds: float = 0.0
    bytes_received: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def add_reason(self, reason: str) -> None:
        with self._lock:
            self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1


class TransientError(Exception):
    """A failure worth another try: throttling, a 5xx, a dropped connection, a body that is not JSON."""

    def __init__(self, reason: str, *, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, retry_after


def _retry_after(value: str | None) -> float | None:
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


def _read_body(response: requests.Response) -> bytes | np.ndarray:
    """The whole body, read straight into one buffer when its length is known (pages are ~17 MB).

    The buffer (a numpy byte array: msgspec decodes from it, and the `raw` column is later built inside it) is
    not zeroed first: bytearray(n) would write 17 MB of zeros while holding the GIL, and the kernel hands over
    zeroed pages anyway, as the socket read touches them with the GIL released. (Arrow's pool measured slower
    and 30 MiB larger at peak.) Other statuses (small error bodies) are returned as bytes.
    """
    length = response.headers.get("Content-Length")
    encoded = response.headers.get("Content-Encoding", "identity") != "identity"
    if length is None or encoded or not length.isdigit():
        return response.content
    buffer = np.empty(int(length), dtype=np.uint8)
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
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError, OSError) as exc:
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


def _unreachable(exc: requests.ConnectionError) -> tuple[str | None, str] | None:
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


def _ssl_reason(exc: Exception) -> str:
    text = str(exc)
    marker = "certificate verify failed"
    return text[text.index(marker) :].split("(")[0].strip() if marker in text else type(exc).__name__


def _detail(response: requests.Response) -> str:
    """The API's own error message: JSON {"detail": ...}, or a short note for HTML pages."""
    try:
        payload = response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "unknown content").split(";")[0]
        return f"{kind} body of {len(response.content)} bytes"
    if isinstance(payload, dict) and "detail" in payload:
        return str(payload["detail"])[:500]
    return str(payload)[:500]


class MdcaClient:
    """A client for one tenant's Activities API.

    >>> client = MdcaClient(MdcaSettings(api_url="http://127.0.0.1:8765", api_token="demo-token"))
    >>> client.count(start_ms, end_ms)        # doctest: +SKIP
    19385
    """

    def __init__(
        self,
        settings: MdcaSettings,
        *,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 180.0),
        session: requests.Session | None = None,
        auth: TokenAuth | EntraAuth | None = None,
        pool_size: int = 16,
    ) -> None:
        self.settings = settings
        self.limiter = limiter if limiter is not None else RateLimiter(settings.requests_per_minute)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.stats = RequestStats()
        self.session = session or requests.Session()
        # Retries are ours (see the module docstring); urllib3 must not retry underneath them.
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.auth = auth or auth_for(settings)
        self._jitter = random.Random()
        # Until the API has answered once, a host that cannot be reached is a configuration error, not an outage.
        self._answered = False
        # The service's clock as of its latest answer (its `Date` header), epoch ms; None before one.
        self.server_time_ms: int | None = None

    def __repr__(self) -> str:
        return f"MdcaClient(api_url={self.settings.api_url!r}, auth={self.settings.auth_kind})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> MdcaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def host(self) -> str:
        """The API's host (and port, if not the scheme's), for messages."""
        return self.settings.api_url.split("://", 1)[1]

    @property
    def activities_url(self) -> str:
        return self.settings.api_url + ACTIVITIES_PATH

    # One exchange, retried.
    def post(self, body: bytes, decode: Callable[[bytes], T], *, path: str = ACTIVITIES_PATH) -> T:
        """POST a JSON body and decode the answer; transient failures are retried, others raised."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.max_attempts)
            | tenacity.stop_after_delay(self.retry.max_seconds),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(TransientError),
            before_sleep=self._before_sleep,
            reraise=False,
        )
        started = time.monotonic()
        try:
            return retrying(self._exchange, body, decode, path)
        except tenacity.RetryError as exc:
            last = exc.last_attempt.exception()
            assert isinstance(last, TransientError)
            attempts = exc.last_attempt.attempt_number
            raise RetriesExhaustedError(
                f"Gave up on POST {path} after {attempts} attempts in {time.monotonic() - started:.0f}s; "
                f"the last one failed with {last.reason}. The retry budget is {self.retry.max_attempts} attempts "
                f"or {self.retry.max_seconds:.0f}s.",
                status=last.status,
                path=path,
                attempts=attempts,
            ) from None

    def _exchange(self, body: bytes, decode: Callable[[bytes], T], path: str) -> T:
        self.limiter.acquire()
        self.stats.add(requests=1)
        try:
            response = self.session.post(
                self.settings.api_url + path,
                data=body,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                auth=self.auth,
                timeout=self.timeout,
                stream=True,
            )
            content = _read_body(response)
        except requests.exceptions.SSLError as exc:
            # A certificate that does not verify will not verify on the next try either.
            raise EndpointError(
                f"TLS verification failed on the way to {self.host} or the sign-in endpoint ({_ssl_reason(exc)}); "
                "check MDCA_API_URL and MDCA_AUTHORITY_HOST, and the machine's CA certificates"
            ) from None
        except requests.Timeout as exc:
            raise TransientError(f"a timeout ({type(exc).__name__})") from None
        except requests.ConnectionError as exc:
            unreachable = None if self._answered else _unreachable(exc)
            if unreachable:
                host, why = unreachable
                api_host = self.host.rsplit(":", 1)[0] if self.host.count(":") == 1 else self.host
                variable = "MDCA_API_URL" if host in (None, api_host) else "MDCA_AUTHORITY_HOST"
                raise EndpointError(
                    f"Could not reach {host or self.host} on the first request: {why}. Check {variable} "
                    "and that this machine can reach that host (DNS, firewall, proxy); nothing was retried."
                ) from None
            raise TransientError(f"a dropped connection ({type(exc).__name__})") from None
        except requests.exceptions.ChunkedEncodingError as exc:
            raise TransientError(f"a dropped connection ({type(exc).__name__})") from None
        self._answered = True
        self._note_server_time(response.headers.get("Date"))
        self.stats.add(bytes_received=len(content))
        status = response.status_code
        if status == 200:
            try:
                return decode(content)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                raise TransientError(f"HTTP 200 with a body that is not the expected JSON ({exc})") from None
        if status in RETRY_STATUSES:
            retry_after = _retry_after(response.headers.get("Retry-After")) if status == 429 else None
            raise TransientError(f"HTTP {status} ({_detail(response)})", status=status, retry_after=retry_after)
        self._raise_for(status, response, path)
        raise AssertionError("unreachable")

    def _note_server_time(self, date: str | None) -> None:
        try:
            when = email.utils.parsedate_to_datetime(date) if date else None
        except (TypeError, ValueError):
            return
        if when is not None:
            self.server_time_ms = int(when.timestamp() * 1000)

    def now_ms(self) -> int:
        """The service's time as of its latest answer, else this machine's (epoch ms)."""
        return self.server_time_ms if self.server_time_ms is not None else int(time.time() * 1000)

    def _raise_for(self, status: int, response: requests.Response, path: str) -> None:
        detail = _detail(response)
        if status == 400:
            raise BadRequestError(f"The API refused the request to {path} (400): {detail}", status=400, path=path)
        if status == 401:
            raise AuthenticationError(
                f"The API rejected the credentials (401: {detail}) at {path}; {self.auth.hint}",
                status=401,
                path=path,
            )
        if status == 403:
            raise PermissionDeniedError(
                f"The credentials are valid but not allowed to read activities (403: {detail}) at {path}. "
                "Grant the Investigation.read permission: to the API token's user, or as an application "
                "permission with admin consent to the Entra ID app.",
                status=403,
                path=path,
            )
        if status == 404:
            raise MdcaHTTPError(
                f"{self.settings.api_url}{path} does not exist (404: {detail}); check that MDCA_API_URL is the "
                "portal's base URL, like https://contoso.eu2.portal.cloudappsecurity.com",
                status=404,
                path=path,
            )
        raise MdcaHTTPError(f"Unexpected HTTP {status} from {path}: {detail}", status=status, path=path)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        n = state.attempt_number
        remaining = max(0.0, self.retry.max_seconds - (state.seconds_since_start or 0.0))
        if isinstance(exc, TransientError) and exc.status == 429:
            if exc.retry_after is not None:
                delay = exc.retry_after + self._jitter.uniform(0.0, 0.25)
            else:
                base = min(self.retry.backoff_max, self.retry.throttle_default * 2 ** (n - 1))
                delay = self._jitter.uniform(base / 2, base)
            delay = min(delay, remaining)
            # The limit is the tenant's, not this thread's: everyone waits.
            self.limiter.pause(delay)
            self.stats.add(throttled=1, throttle_wait_seconds=delay)
            return delay
        cap = min(self.retry.backoff_max, self.retry.backoff_first * 2 ** (n - 1))
        return min(self._jitter.uniform(0.0, cap), remaining)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = exc.reason if isinstance(exc, TransientError) else repr(exc)
        self.stats.add(retries=1)
        self.stats.add_reason(reason.split(" (")[0])
        sleep = state.next_action.sleep if state.next_action else 0.0
        log.info("retrying after %s: attempt %d, waiting %.1fs", reason, state.attempt_number, sleep)

    # The independent count.
    def count(self, start_ms: int, end_ms: int, filters: dict[str, Any] | None = None) -> int:
        """The list-mode `total` of activities with `timestamp` in [start_ms, end_ms): the source's own count.

        `filters` narrows it, e.g. `{"created": {"lte": watermark_ms}}`: what the day held as of a watermark.
        """
        body = {"filters": window_filters(start_ms, end_ms, filters), "limit": 1, "skip": 0}
        return self.post(msgspec.json.encode(body), _decode_total)


class _ListResponse(msgspec.Struct):
    total: int


def _decode_total(content: bytes) -> int:
    return msgspec.json.decode(content, type=_ListResponse).total


def window_filters(start_ms: int, end_ms: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Filters for [start_ms, end_ms): `date` takes gte/lte (the documented operators), so the end is end - 1."""
    if end_ms <= start_ms:
        raise ValueError(f"empty window: end {end_ms} is not after start {start_ms}")
    filters = dict(extra or {})
    if "date" in filters:
        raise ValueError("the window sets the 'date' filter; pass other filters only")
    filters["date"] = {"gte": start_ms, "lte": end_ms - 1}
    return filters
