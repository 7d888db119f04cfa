"""HTTP to the Activities API: one session, explicit timeouts, a shared rate limiter, bounded retries.

Retries are tenacity's (exponential backoff with full jitter, capped by attempts and by total time). They
wrap the whole exchange, decoding included, because the service's failures are not all HTTP statuses:
connections drop mid-body and bodies arrive cut short. Those are retried like a 503, within a budget that
ends an outage's retries within minutes (`RetryPolicy.max_seconds`). What retrying cannot fix fails at once
with a message that says what to check: 400, 401, 403, 404; an answer that is not the API's JSON (a proxy's
HTML page, JSON of another shape, NaN); a body larger than a page can be; a server that does not answer
the first request at all.

Every attempt has a deadline for the whole exchange, headers and body (`RetryPolicy.request_deadline`), as
well as a timeout for each read: a body trickled a byte at a time never trips a per-read timeout. Text the
server sent goes into messages only through `redact.server_text`: proxies echo request headers.
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

from activity_pipeline.mdca import wire
from activity_pipeline.mdca.auth import EntraAuth, TokenAuth, auth_for
from activity_pipeline.mdca.errors import (
    EndpointError,
    ProtocolError,
    RetriesExhaustedError,
)
from activity_pipeline.mdca.ratelimit import RateLimiter
from activity_pipeline.mdca.redact import server_text
from activity_pipeline.mdca.settings import MdcaSettings
from activity_pipeline.mdca.statuses import status_error

log = logging.getLogger(__name__)
T = TypeVar("T")

ACTIVITIES_PATH = "/api/v1/activities/"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying one request. Every figure is a cap; the first success ends it.

    The defaults end every dead end within a minute and an outage (429 or 5xx without end) within ten: a
    request gives up after `max_seconds` of retries plus one last attempt's `request_deadline`.
    """

    max_attempts: int = 8
    max_seconds: float = 480.0
    backoff_first: float = 1.0
    backoff_max: float = 60.0
    # 429 without Retry-After: wait this long, doubling per attempt (capped by backoff_max).
    throttle_default: float = 10.0
    connect_timeout: float = 10.0
    # The longest silence between two reads of one answer.
    read_timeout: float = 30.0
    # The longest one attempt may take, connection, headers and body together.
    request_deadline: float = 45.0
    # A wait between attempts this long or longer is announced in the run's log, and again this often while it
    # lasts (a Retry-After of hours would otherwise leave a run silent until its budget ends).
    notice_every: float = 60.0


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
    """A failure worth another try: throttling, a 5xx, a dropped connection, a body cut short, a timeout once
    the API has answered."""

    def __init__(self, reason: str, *, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, retry_after


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
        session: requests.Session | None = None,
        auth: TokenAuth | EntraAuth | None = None,
        pool_size: int = 16,
        filters: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        # The tenant's own API filters (`mdca.filters.check_filters`), in every request: each scan, slice, top-up
        # and count. The window's `date` (and a top-up's `created`) are added to them.
        self.filters: dict[str, Any] = dict(filters or {})
        # Where progress notes go (a run's `context.log`, given by the resource); this module's logger otherwise.
        self.log: Any = log
        self.limiter = limiter if limiter is not None else RateLimiter(settings.requests_per_minute)
        self.retry = retry or RetryPolicy()
        self.timeout = (self.retry.connect_timeout, self.retry.read_timeout)
        self.stats = RequestStats()
        self._call = threading.local()
        self.session = session or requests.Session()
        # Retries are ours (see the module docstring); urllib3 must not retry underneath them.
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.auth = auth or auth_for(settings)
        self._jitter = random.Random()
        # Until the API has answered once, a host that cannot be reached is a configuration error, not an outage.
        self._answered = False
        # Values a server may echo back, taken out of any text it sent before that text goes anywhere.
        self._secrets = tuple(
            s.reveal() for s in (settings.api_token, settings.client_secret) if s is not None and s.reveal()
        )
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
            sleep=self._sleep,
            reraise=False,
        )
        started = time.monotonic()
        # This call's own waits after a 429 (other threads wait too, in their own calls), and whether the service
        # said how long (Retry-After).
        self._call.throttled, self._call.asked = 0.0, False
        try:
            return retrying(self._exchange, body, decode, path)
        except tenacity.RetryError as exc:
            last = exc.last_attempt.exception()
            assert isinstance(last, TransientError)
            attempts = exc.last_attempt.attempt_number
            throttled = self._call.throttled
            how = "for as long as its Retry-After said" if self._call.asked else "backing off (it sent no Retry-After)"
            waited = f", {throttled:.0f}s of it waiting after 429s, {how}" if throttled >= 1 else ""
            raise RetriesExhaustedError(
                f"Gave up on POST {path} after {attempts} attempts in {time.monotonic() - started:.0f}s{waited}; "
                f"the last one failed with {last.reason}. The retry budget is {self.retry.max_attempts} attempts "
                f"or {self.retry.max_seconds:.0f}s: the service is down or overloaded, or its rate limit is spent "
                "by another client of the tenant; run the day again later.",
                status=last.status,
                path=path,
                attempts=attempts,
            ) from None

    def _say_pause(self, seconds: float) -> None:
        limit = self.settings.requests_per_minute
        self.log.info(
            f"pausing {seconds:.0f}s for the tenant's rate limit ({limit} requests a minute, shared by this machine's "
            "runs of the tenant)"
        )

    def _exchange(self, body: bytes, decode: Callable[[bytes], T], path: str) -> T:
        self.limiter.acquire(on_wait=self._say_pause)
        self.stats.add(requests=1)
        deadline = wire.Deadline(self.retry.request_deadline)
        try:
            response = self.session.post(
                self.settings.api_url + path,
                data=body,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                auth=self.auth,
                timeout=self.timeout,
                stream=True,
                # Never followed: a redirect elsewhere would carry the credentials there, or drop them.
                allow_redirects=False,
            )
            deadline.watch(response)
            content = wire.read_body(response)
        except requests.exceptions.SSLError as exc:
            raise self._tls_error(exc) from None
        except requests.Timeout as exc:
            raise self._silence(f"no answer within {self.retry.read_timeout:.0f}s ({type(exc).__name__})") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            if deadline.expired:
                raise self._silence(
                    f"an answer still unfinished after {deadline.seconds:.0f}s (the request's deadline)"
                ) from None
            connecting = not self._answered and isinstance(exc, requests.ConnectionError)
            unreachable = wire.unreachable(exc) if connecting else None
            if unreachable:
                host, why = unreachable
                api_host = self.host.rsplit(":", 1)[0] if self.host.count(":") == 1 else self.host
                variable = "MDCA_API_URL" if host in (None, api_host) else "MDCA_AUTHORITY_HOST"
                raise EndpointError(
                    f"Could not reach {host or self.host} on the first request: {why}. Check {variable} "
                    "and that this machine can reach that host (DNS, firewall, proxy); nothing was retried."
                ) from None
            raise TransientError(f"a dropped connection ({type(exc).__name__})") from None
        finally:
            deadline.cancel()
        self._note_server_time(response.headers.get("Date"))
        self.stats.add(bytes_received=len(content))
        status = response.status_code
        if status == 200:
            result = self._decode(response, content, decode)
            self._answered = True
            return result
        self._answered = True
        if status in RETRY_STATUSES:
            retry_after = wire.retry_after(response.headers.get("Retry-After")) if status == 429 else None
            raise TransientError(
                f"HTTP {status} ({wire.detail(response, self._secrets)})", status=status, retry_after=retry_after
            )
        raise status_error(
            status, response, path, api_url=self.settings.api_url, host=self.host, hint=self.auth.hint,
            detail=wire.detail(response, self._secrets),
        )  # fmt: skip

    def _decode(self, response: requests.Response, content: bytes | np.ndarray, decode: Callable[[bytes], T]) -> T:
        """The answer decoded. A body cut short is retried; one that is not the API's JSON is final."""
        kind = wire.content_kind(response)
        if "json" not in kind.lower():
            raise ProtocolError(
                f"{self.host} answered 200 with {kind} ({len(content):,} bytes), not the Activities API's JSON: a "
                "sign-in page, a proxy or another service answers at that address. Check MDCA_API_URL (the portal's "
                "base URL, like https://contoso.eu2.portal.cloudappsecurity.com) and any proxy on the way."
            )
        try:
            return decode(content)
        except ValueError as exc:  # msgspec's DecodeError and ValidationError (a DecodeError too) among them
            if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
                return self._undecodable(exc, content)
            raise ProtocolError(
                f"{self.host} answered 200 with JSON that is not the Activities API's ({server_text(str(exc))}): "
                "it is not the API, or an incompatible version of it. Check MDCA_API_URL."
            ) from None

    def _undecodable(self, exc: msgspec.DecodeError, content: bytes | np.ndarray) -> Any:
        if "truncated" in str(exc):
            raise TransientError(f"HTTP 200 with a body cut short ({exc})") from None
        raise ProtocolError(
            f"{self.host} answered 200 with a body that is not valid JSON ({server_text(str(exc))}; "
            f"{len(content):,} bytes): it is not the Activities API, or something between rewrites its answers. "
            "Check MDCA_API_URL and any proxy on the way."
        ) from None

    def _silence(self, reason: str) -> Exception:
        """A timeout: an outage once the API has answered, a dead end on the first request."""
        if self._answered:
            return TransientError(reason)
        return EndpointError(
            f"{self.host} accepted the connection but sent {reason} on the first request: no Activities API answers "
            "there, or it hangs. Check MDCA_API_URL (the portal's base URL) and any proxy on the way; nothing was "
            "retried."
        )

    def _tls_error(self, exc: requests.exceptions.SSLError) -> EndpointError:
        """TLS that fails will fail the same on the next try."""
        text = str(exc).lower()
        if any(marker in text for marker in wire.PLAIN_HTTP_MARKERS):
            return EndpointError(
                f"TLS failed on the way to {self.host}: the port speaks plain HTTP, not TLS. Use the port that "
                "serves https://, or http:// if it really is plain HTTP (accepted only on loopback); check "
                "MDCA_API_URL and MDCA_AUTHORITY_HOST."
            )
        return EndpointError(
            f"TLS verification failed on the way to {self.host} or the sign-in endpoint ({wire.ssl_reason(exc)}); "
            "check MDCA_API_URL and MDCA_AUTHORITY_HOST, and the machine's CA certificates"
        )

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
            self._call.throttled += delay
            self._call.asked = self._call.asked or exc.retry_after is not None
            return delay
        cap = min(self.retry.backoff_max, self.retry.backoff_first * 2 ** (n - 1))
        return min(self._jitter.uniform(0.0, cap), remaining)

    def _sleep(self, seconds: float) -> None:
        """Sleep between attempts, saying so at least every `RetryPolicy.notice_every` of a long wait."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, self.retry.notice_every))
            left = end - time.monotonic()
            if left > 0.5:
                self.log.info(f"still waiting to retry: {left:.0f}s of {seconds:.0f}s left (the retry budget is "
                              f"{self.retry.max_seconds:.0f}s)")  # fmt: skip

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = exc.reason if isinstance(exc, TransientError) else repr(exc)
        self.stats.add(retries=1)
        self.stats.add_reason(reason.split(" (")[0])
        sleep = state.next_action.sleep if state.next_action else 0.0
        line = f"retrying after {reason}: attempt {state.attempt_number}, waiting {sleep:.1f}s"
        (self.log.info if sleep >= self.retry.notice_every else log.info)(line)

    # The independent count.
    def count(
        self,
        start_ms: int,
        end_ms: int,
        filters: dict[str, Any] | None = None,
        *,
        under: dict[str, Any] | None = None,
    ) -> int:
        """The list-mode `total` of activities with `timestamp` in [start_ms, end_ms): the source's own count.

        `filters` narrows it, e.g. `{"created": {"lte": watermark_ms}}`: what the day held as of a watermark.
        `under`: count under these tenant filters instead of the client's (a day stored under earlier filters).
        """
        body = {"filters": self.window(start_ms, end_ms, filters, under=under), "limit": 1, "skip": 0}
        return self.post(msgspec.json.encode(body), _decode_total)

    def window(
        self, start_ms: int, end_ms: int, extra: dict[str, Any] | None = None, *, under: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A request's filters: the tenant's (or `under`), `extra`, and the window [start_ms, end_ms)."""
        return window_filters(start_ms, end_ms, {**(self.filters if under is None else under), **(extra or {})})


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
