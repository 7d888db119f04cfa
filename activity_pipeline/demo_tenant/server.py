"""The demo tenant over real HTTP: the Activities API's routes, auth, throttling and faults.

Everything awkward is on purpose, as the real service is awkward: HTML error pages, 429 with or without
`Retry-After`, dropped and truncated responses, a POST without the trailing slash that ignores its body.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import hashlib
import json
import logging
import math
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from activity_pipeline.demo_tenant.tenant import (
    LIST_LIMIT_MAX,
    LIST_WINDOW_MAX,
    SCAN_LIMIT_DEFAULT,
    SCAN_LIMIT_MAX,
    SCAN_LIMIT_MIN,
    BadRequest,
    DemoTenant,
)

if TYPE_CHECKING:
    from activity_pipeline.demo_tenant.on_demand import DemoTenantOnDemand

log = logging.getLogger(__name__)

FAULT_KINDS = ("html_500", "html_502", "html_503", "truncated", "garbled", "dropped")
ACTIVITIES_PATH = "/api/v1/activities/"
_ONE_ACTIVITY = re.compile(r"^/api/v1/activities/([^/]+)/?$")

_HTML_PAGE = """<!DOCTYPE html>
<html><head><title>{code} {title}</title></head>
<body><h1>{title}</h1><p>{text}</p><hr><p>Microsoft Defender for Cloud Apps</p></body></html>
"""


@dataclass
class ServerSettings:
    """How the demo tenant behaves on the wire. The defaults are the real service's documented ones."""

    tokens: tuple[str, ...] = ("demo-token",)
    # Tokens that authenticate but lack rights: 403, as a user without Investigation.read gets.
    forbidden_tokens: tuple[str, ...] = ()
    requests_per_minute: int = 30  # 0 turns throttling off
    window_seconds: float = 60.0  # the throttle's rolling window; tests shorten it
    retry_after: bool = True
    latency_ms: float = 0.0
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    fault_seed: int = 1

    def __post_init__(self) -> None:
        if self.requests_per_minute < 0:
            raise ValueError("requests_per_minute must be 0 (off) or positive")
        if self.window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1, got {self.fault_rate}")
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")


@dataclass
class ServerStats:
    """What the server saw, for tests and benchmarks."""

    requests: int = 0
    throttled: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    by_status: collections.Counter[int] = field(default_factory=collections.Counter)
    # Each request to the API's routes: when it arrived (time.monotonic) and a digest of the credential it
    # carried ("" without one), so a test can tell whose requests reached this tenant and how fast.
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    # Requests that were not throttled, by arrival time: what counted against the tenant's limit.
    admitted: list[float] = field(default_factory=list)


def credential_digest(credential: str) -> str:
    """What the server keeps of a credential it saw: never the credential itself."""
    return hashlib.sha256(credential.encode()).hexdigest()[:16] if credential else ""


class _Throttle:
    """At most `limit` accepted requests in any rolling window, as the tenant-wide limit works."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def admit(self) -> float | None:
        """None when the request may go ahead; otherwise seconds until a slot frees up."""
        if self.limit == 0:
            return None
        with self._lock:
            now = time.monotonic()
            while self._times and self._times[0] <= now - self.window:
                self._times.popleft()
            if len(self._times) < self.limit:
                self._times.append(now)
                return None
            return self._times[0] + self.window - now


class DemoTenantServer:
    """Serve a DemoTenant on 127.0.0.1, in a background thread.

    >>> with DemoTenantServer(tenant) as server:   # doctest: +SKIP
    ...     requests.post(server.url + "/api/v1/activities/", ...)
    """

    def __init__(
        self, tenant: DemoTenant | DemoTenantOnDemand, settings: ServerSettings | None = None, *, port: int = 0
    ) -> None:
        self.tenant = tenant
        self.settings = settings or ServerSettings()
        self.stats = ServerStats()
        self._throttle = _Throttle(self.settings.requests_per_minute, self.settings.window_seconds)
        self._rng = random.Random(self.settings.fault_seed)
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"server_app": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        # Bearer tokens issued by an EntraStandIn: token -> monotonic expiry.
        self._bearers: dict[str, float] = {}

    def accept_bearer(self, token: str, ttl_seconds: float) -> None:
        with self._lock:
            self._bearers[token] = time.monotonic() + ttl_seconds

    def bearer_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._bearers.get(token)
        return expiry is not None and time.monotonic() < expiry

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, as MDCA_API_URL takes it."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DemoTenantServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="demo-tenant", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> DemoTenantServer:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def draw_fault(self) -> str | None:
        s = self.settings
        if s.fault_rate <= 0 or not s.fault_kinds:
            return None
        with self._lock:
            if self._rng.random() >= s.fault_rate:
                return None
            return self._rng.choice(s.fault_kinds)


class _Handler(BaseHTTPRequestHandler):
    server_app: DemoTenantServer
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections give their thread back after this long.
    timeout = 30
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header by the tenant's clock, which a test may pin or run fast, as the service's own."""
        if timestamp is None:
            timestamp = self.server_app.tenant.now_ms() / 1000
        return email.utils.formatdate(timestamp, usegmt=True)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # Plumbing
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        app = self.server_app
        with app._lock:
            app.stats.by_status[status] += 1
        reason = "TOO MANY REQUESTS" if status == 429 else None
        self.send_response(status, reason)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self._send(status, body, "application/json", headers)

    def _html(self, status: int, title: str, text: str) -> None:
        body = _HTML_PAGE.format(code=status, title=title, text=text).encode()
        self._send(status, body, "text/html; charset=utf-8")

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # The request's life: route, auth, throttle, latency, faults, answer.
    def _dispatch(self, method: str) -> None:
        app = self.server_app
        body = self._read_body()
        with app._lock:
            app.stats.requests += 1
        path = self.path.split("?", 1)[0]
        one = _ONE_ACTIVITY.match(path)
        route = None
        if path in (ACTIVITIES_PATH, ACTIVITIES_PATH.rstrip("/")) and method in ("GET", "POST"):
            route = "activities"
        elif one and method == "GET":
            route = "one"
        if route is None:
            self._html(404, "Not Found", "The page you requested could not be found.")
            return
        header = self.headers.get("Authorization") or ""
        arrived = time.monotonic()
        with app._lock:
            app.stats.arrivals.append((arrived, credential_digest(header.partition(" ")[2].strip())))
        if not self._authorized():
            return
        wait = app._throttle.admit()
        if wait is not None:
            with app._lock:
                app.stats.throttled += 1
            headers = {"Retry-After": str(max(1, math.ceil(wait)))} if app.settings.retry_after else {}
            self._json(
                429, {"detail": f"Request was throttled. Expected available in {math.ceil(wait)} seconds."}, headers
            )
            return
        with app._lock:
            app.stats.admitted.append(arrived)
        if app.settings.latency_ms:
            time.sleep(app.settings.latency_ms / 1000)
        fault = app.draw_fault()
        if fault is not None:
            with app._lock:
                app.stats.faults[fault] += 1
            if fault.startswith("html_"):
                status = int(fault[5:])
                titles = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
                self._html(status, titles.get(status, "Error"), "The service is temporarily unavailable.")
                return
            if fault == "dropped":
                self._drop()
                return
        try:
            if route == "one":
                status, payload = self._one(one.group(1))  # type: ignore[union-attr]
            elif path == ACTIVITIES_PATH.rstrip("/") or method == "GET":
                # Seen on the real service: without the trailing slash the body is ignored.
                status, payload = self._query({})
            else:
                status, payload = self._query(self._parse(body))
        except BadRequest as exc:
            self._json(400, {"detail": str(exc)})
            return
        except Exception:
            log.exception("demo tenant failed on %s", path)
            self._html(500, "Internal Server Error", "An unexpected error occurred.")
            return
        if fault in ("truncated", "garbled"):
            cut = payload[: max(1, len(payload) // 2)]
            if fault == "garbled":
                # A whole response whose body is not JSON: a proxy's page cut short.
                self._send(200, cut, "application/json")
            else:
                # Headers promise the whole body; the connection ends halfway.
                with app._lock:
                    app.stats.by_status[status] += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(cut)
                self.wfile.flush()
                self._drop()
            return
        self._send(status, payload, "application/json")

    def _authorized(self) -> bool:
        settings = self.server_app.settings
        header = self.headers.get("Authorization") or ""
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme not in ("Token", "Bearer") or not credential:
            self._json(401, {"detail": "Invalid token"})
            return False
        if credential in settings.forbidden_tokens:
            self._json(403, {"detail": "You do not have permission to perform this action."})
            return False
        issued = scheme == "Bearer" and self.server_app.bearer_valid(credential)
        if credential not in settings.tokens and not issued:
            self._json(401, {"detail": "Invalid token"})
            return False
        return True

    @staticmethod
    def _parse(body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"JSON parse error - {exc}") from exc
        if not isinstance(parsed, dict):
            raise BadRequest("Request body must be a JSON object")
        return parsed

    def _one(self, activity_id: str) -> tuple[int, bytes]:
        record = self.server_app.tenant.record(activity_id)
        if record is None:
            return 404, b'{"detail":"Not found."}'
        return 200, record.encode()

    def _query(self, body: dict[str, Any]) -> tuple[int, bytes]:
        tenant = self.server_app.tenant
        filters = body.get("filters") or {}
        if not isinstance(filters, dict):
            raise BadRequest("'filters' must be an object of filter name to {operator: value}")
        is_scan = body.get("isScan", False)
        if not isinstance(is_scan, bool):
            raise BadRequest(f"'isScan' must be true or false, got {is_scan!r}")
        sort_field = body.get("sortField", "date")
        if sort_field not in ("date", "created"):
            raise BadRequest(f"'sortField' must be 'date' or 'created', got {sort_field!r}")
        direction = body.get("sortDirection", "desc")
        if direction not in ("asc", "desc"):
            raise BadRequest(f"'sortDirection' must be 'asc' or 'desc', got {direction!r}")
        limit = body.get("limit", SCAN_LIMIT_DEFAULT if is_scan else LIST_LIMIT_MAX)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise BadRequest(f"'limit' must be an integer, got {limit!r}")
        if is_scan:
            if not SCAN_LIMIT_MIN <= limit <= SCAN_LIMIT_MAX:
                raise BadRequest(f"'limit' must be between {SCAN_LIMIT_MIN} and {SCAN_LIMIT_MAX} in scan mode")
            page = tenant.scan(filters, limit=limit, sort_field=sort_field, direction=direction)
            head = b'{"data":['
            tail = b'],"hasNext":' + (b"true" if page.has_next else b"false")
            if page.has_next:
                tail += b',"nextQueryFilters":' + json.dumps(page.next_filters, separators=(",", ":")).encode()
            # surrogateescape: a record may carry bytes that are not UTF-8, as a real answer can (tests send some).
            return 200, b"".join((head, ",".join(page.records).encode("utf-8", "surrogateescape"), tail, b"}"))
        skip = body.get("skip", 0)
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise BadRequest(f"'skip' must be a non-negative integer, got {skip!r}")
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise BadRequest(f"'limit' must be between 1 and {LIST_LIMIT_MAX} outside scan mode")
        if skip + limit > LIST_WINDOW_MAX:
            raise BadRequest(f"'skip' + 'limit' must not exceed {LIST_WINDOW_MAX}; use scan mode (isScan) for more")
        page = tenant.list(filters, limit=limit, skip=skip, sort_field=sort_field, direction=direction)
        head = b'{"total":' + str(page.total).encode() + b',"hasNext":' + (b"true" if page.has_next else b"false")
        head += b',"max":' + str(LIST_WINDOW_MAX).encode() + b',"moreThanTotal":false,"data":['
        return 200, head + ",".join(page.records).encode("utf-8", "surrogateescape") + b"]}"
