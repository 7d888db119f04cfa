"""A stand-in for Microsoft Entra ID's client-credentials token endpoint, over HTTPS on 127.0.0.1.

msal only talks to https authorities, so the stand-in serves TLS with a certificate it makes for itself;
callers trust it through `ca_path` (a requests Session with `verify=ca_path`). Tokens it issues are
accepted as Bearer tokens by the DemoTenantServer it is attached to, until they expire.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from activity_pipeline.demo_tenant.server import DemoTenantServer

MDCA_SCOPE = "05a65629-4c1b-48c1-a78b-804c4abdd4af/.default"


def self_signed(directory: Path, common_name: str = "activity-pipeline demo Entra ID") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, its own CA, and its key: `cert.pem` and `key.pem` in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class EntraStandIn:
    """Issue client-credentials tokens for one app registration.

    >>> with DemoTenantServer(tenant) as api, EntraStandIn(api, "tenant-guid", "app-id", "s3cret") as entra:
    ...     session = requests.Session(); session.verify = entra.ca_path      # doctest: +SKIP
    """

    def __init__(
        self,
        api: DemoTenantServer,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        *,
        expires_in: int = 3599,
    ) -> None:
        self.api = api
        self.tenant_id, self.client_id, self._client_secret = tenant_id, client_id, client_secret
        self.expires_in = expires_in
        self.issued = 0
        self._dir = tempfile.TemporaryDirectory(prefix="demo-entra-")
        cert_path, key_path = self_signed(Path(self._dir.name))
        self.ca_path = str(cert_path)
        handler = type("EntraHandler", (_EntraHandler,), {"app": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def authority_host(self) -> str:
        """What MDCA_AUTHORITY_HOST takes."""
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> EntraStandIn:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="demo-entra", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._dir.cleanup()

    def token_response(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "AADSTS70003: unsupported grant"}
        if form.get("client_id") != self.client_id:
            return 400, {
                "error": "unauthorized_client",
                "error_description": f"AADSTS700016: Application with identifier '{form.get('client_id')}' was "
                "not found in the directory.",
            }
        if not secrets.compare_digest(form.get("client_secret", ""), self._client_secret):
            return 401, {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
                "in the request is the client secret value, not the client secret ID.",
            }
        if MDCA_SCOPE not in form.get("scope", "").split():
            return 400, {"error": "invalid_scope", "error_description": "AADSTS70011: The provided scope is invalid."}
        token = "eyJ0eXAiOiJKV1Qi." + secrets.token_urlsafe(32)
        self.api.accept_bearer(token, self.expires_in)
        self.issued += 1
        return 200, {
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "ext_expires_in": self.expires_in,
            "access_token": token,
        }


class _EntraHandler(BaseHTTPRequestHandler):
    app: EntraStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        tenant = self.app.tenant_id
        if self.path.split("?")[0] != f"/{tenant}/v2.0/.well-known/openid-configuration":
            self._json(400, {"error": "invalid_tenant", "error_description": "AADSTS90002: Tenant not found."})
            return
        base = f"{self.app.authority_host}/{tenant}"
        self._json(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
            },
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if self.path.split("?")[0] != f"/{self.app.tenant_id}/oauth2/v2.0/token":
            self._json(404, {"error": "not_found"})
            return
        status, payload = self.app.token_response(form)
        self._json(status, payload)
