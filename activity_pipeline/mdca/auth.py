"""The two ways to authenticate: a legacy API token, or a Microsoft Entra ID app (client credentials)."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import msal
import requests

from activity_pipeline.mdca.errors import AuthenticationError
from activity_pipeline.mdca.redact import server_text
from activity_pipeline.mdca.settings import MDCA_SCOPE, MdcaSettings, Secret, is_loopback


class TokenAuth(requests.auth.AuthBase):
    """`Authorization: Token <token>`, the legacy API token."""

    def __init__(self, token: Secret, variable: str = "MDCA_API_TOKEN") -> None:
        self._token = token
        self.hint = (
            f"check {variable}: tokens are case-sensitive and stop working when revoked or when their user loses access"
        )

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Token {self._token.reveal()}"
        return r

    def __repr__(self) -> str:
        return "TokenAuth(********)"


class EntraAuth(requests.auth.AuthBase):
    """`Authorization: Bearer <access token>` from Microsoft Entra ID's client-credentials flow.

    msal caches the access token and asks for a new one shortly before it expires (tokens last an hour),
    so calling it before every request costs a dictionary lookup, not a round trip.
    """

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: Secret,
        authority_host: str,
        *,
        http_client: requests.Session | None = None,
        variables: tuple[str, str, str] = ("MDCA_TENANT_ID", "MDCA_CLIENT_ID", "MDCA_CLIENT_SECRET"),
    ) -> None:
        self._client_variable = variables[1]
        self.hint = (
            f"check {variables[0]}, {variables[1]} and {variables[2]}, and that the app registration has the "
            "Investigation.read application permission with admin consent"
        )
        self.tenant_id, self.client_id = tenant_id, client_id
        self._secret = client_secret
        self._authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self._http_client = http_client
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            host = urlsplit(self._authority).hostname or ""
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=self._secret.reveal(),
                    authority=self._authority,
                    http_client=self._http_client,
                    # A loopback stand-in is not a Microsoft cloud: don't ask Microsoft to vouch for it.
                    instance_discovery=False if is_loopback(host) else None,
                )
            except ValueError as exc:
                raise AuthenticationError(
                    f"Microsoft Entra ID authority {self._authority} was not usable ({exc}); check MDCA_TENANT_ID "
                    "and MDCA_AUTHORITY_HOST",
                    status=0,
                    path=self._authority,
                ) from None
        return self._app

    def access_token(self) -> str:
        with self._lock:
            result = self._application().acquire_token_for_client(scopes=[MDCA_SCOPE])
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            error = result.get("error", "unknown_error") if isinstance(result, dict) else "no answer"
            lines = str(result.get("error_description") or "").splitlines() if isinstance(result, dict) else []
            description = lines[0] if lines else ""
            # Entra's words, or a proxy's in its place: server text, so redacted like the API's.
            secret = [self._secret.reveal()]
            error, description = server_text(str(error), secret), server_text(description, secret)
            raise AuthenticationError(
                f"Microsoft Entra ID refused the client credentials for {self._client_variable}={self.client_id} "
                f"({error}: {description}); {self.hint}",
                status=401,
                path=self._authority,
            )
        return str(token)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.access_token()}"
        return r

    def __repr__(self) -> str:
        return f"EntraAuth(tenant_id={self.tenant_id!r}, client_id={self.client_id!r}, client_secret=********)"


def auth_for(settings: MdcaSettings, *, http_client: requests.Session | None = None) -> TokenAuth | EntraAuth:
    if settings.api_token is not None:
        return TokenAuth(settings.api_token, settings.variable("api_token"))
    assert settings.tenant_id and settings.client_id and settings.client_secret
    return EntraAuth(
        settings.tenant_id,
        settings.client_id,
        settings.client_secret,
        settings.authority_host,
        http_client=http_client,
        variables=(settings.variable("tenant_id"), settings.variable("client_id"), settings.variable("client_secret")),
    )
