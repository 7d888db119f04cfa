"""A hostile stand-in for the Activities API over real HTTP on 127.0.0.1: it answers counts sanely (so that a
run gets as far as its scan) and misbehaves in one chosen way, as a proxy, a gateway or another service at
the configured address would.

>>> with HostileServer("echo:401") as server:        # doctest: +SKIP
...     client_for(server.url).count(0, 1)
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Every behaviour, by name; "echo:<status>" answers that status with a body that repeats the request's
# headers (the token among them), as some proxies and gateways do.
MODES = (
    "html200",  # a sign-in page or a proxy's, with status 200
    "data_not_list",  # JSON of another shape
    "nan",  # JSON with NaN in it (not JSON)
    "no_cursor",  # hasNext without nextQueryFilters
    "huge_length",  # a Content-Length of 10^15
    "trickle",  # the body one byte a second
    "silent",  # accepts, reads the request, never answers
    "redirect",  # 307 to `redirect_to` (another address), as a load balancer or a moved tenant does
)


class HostileServer:
    """Serve `mode` (one of MODES, or "echo:<status>") until stopped; `mode` may be changed between requests.

    `counts_ok`: count requests (list mode, `limit` 1) get a sane `{"total": ...}`, so that the scan is reached.
    """

    def __init__(self, mode: str, *, counts_ok: bool = True, total: int = 3, redirect_to: str = "") -> None:
        self.mode = mode
        self.redirect_to = redirect_to
        self.counts_ok = counts_ok
        self.total = total
        self.requests = 0
        self.first_request_at: float | None = None
        self._stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                owner.requests += 1
                owner.first_request_at = owner.first_request_at or time.monotonic()
                if owner.counts_ok and not body.get("isScan"):
                    return self._send(200, json.dumps({"total": owner.total, "data": []}).encode())
                owner._misbehave(self, body)

            def _send(self, status: int, payload: bytes, kind: str = "application/json", **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        self.Handler = Handler
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _misbehave(self, h: Any, body: dict[str, Any]) -> None:
        mode = self.mode
        echoed = {name: value for name, value in h.headers.items()}
        if mode.startswith("echo:"):
            status = int(mode.split(":", 1)[1])
            text = f"request rejected; headers were {echoed}; Authorization: {h.headers.get('Authorization')}"
            if status == 200:
                # A proxy's page, in HTML, that shows what it was sent.
                page = f"<html><body><h1>Proxy</h1><pre>{json.dumps(echoed)}</pre></body></html>".encode()
                return h._send(200, page, "text/html")
            extra = {"Retry-After": "0"} if status == 429 else {}
            return h._send(status, json.dumps({"detail": text, "headers": echoed}).encode(), **extra)
        if mode == "redirect":
            return h._send(307, b"", "text/plain", Location=self.redirect_to)
        if mode == "html200":
            return h._send(200, b"<!DOCTYPE html><html><body>Sign in to continue</body></html>", "text/html")
        if mode == "data_not_list":
            return h._send(200, b'{"data": "none today", "hasNext": false}')
        if mode == "nan":
            return h._send(200, b'{"data": [{"_id": "a", "timestamp": NaN}], "hasNext": false}')
        if mode == "no_cursor":
            record = {"_id": f"r{self.requests}", "timestamp": body["filters"]["date"]["gte"]}
            return h._send(200, json.dumps({"data": [record], "hasNext": True}).encode())
        if mode == "huge_length":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(10**15))
            h.end_headers()
            h.wfile.write(b'{"data": [')
            h.wfile.flush()
            h.close_connection = True
            return None
        if mode == "trickle":
            payload = b'{"data": [], "hasNext": false}' + b" " * 200
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            for k in range(len(payload)):
                if self._stop.is_set():
                    break
                try:
                    h.wfile.write(payload[k : k + 1])
                    h.wfile.flush()
                except OSError:
                    break
                time.sleep(0.5)
            h.close_connection = True
            return None
        if mode == "silent":
            self._stop.wait()
            h.close_connection = True
            return None
        raise ValueError(f"unknown mode {mode!r}")

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
