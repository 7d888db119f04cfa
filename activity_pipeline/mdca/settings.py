"""Settings for reaching a tenant, checked before any request is made.

Messages name the environment variables a user sets (`activity_pipeline.config` reads them); the settings
themselves read nothing.

>>> s = MdcaSettings(api_url="https://contoso.eu2.portal.cloudappsecurity.com/", api_token="abc")
>>> s.auth_kind, s.api_url, s.api_token
('token', 'https://contoso.eu2.portal.cloudappsecurity.com', Secret('********'))
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from activity_pipeline.errors import ConfigError

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
MDCA_SCOPE = "05a65629-4c1b-48c1-a78b-804c4abdd4af/.default"
DEFAULT_REQUESTS_PER_MINUTE = 30
# Where each credential is read from for the single tenant of the MDCA_* variables.
DEFAULT_VARIABLES = {
    "api_token": "MDCA_API_TOKEN",
    "tenant_id": "MDCA_TENANT_ID",
    "client_id": "MDCA_CLIENT_ID",
    "client_secret": "MDCA_CLIENT_SECRET",
}
ENTRA_VARS = tuple(DEFAULT_VARIABLES[f] for f in ("tenant_id", "client_id", "client_secret"))


class Secret:
    """A credential that never shows itself in a repr, a log line or an exception."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret values are not pickled")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, *, variable: str = "MDCA_API_URL") -> str:
    """The normalised base URL, or a ConfigError that says what is wrong with it."""
    example = "https://contoso.eu2.portal.cloudappsecurity.com"
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{variable} is not a valid URL ({exc}); expected something like {example}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{variable} must be an http(s) URL with a host name, like {example}; got {text!r}")
    if parts.username or parts.password:
        raise ConfigError(f"{variable} must not embed credentials; use MDCA_API_TOKEN or the MDCA_CLIENT_* variables")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"{variable} uses plain http:// to {parts.hostname}, which would send credentials unencrypted; "
            "use https:// (plain http is accepted only for loopback addresses such as the demo tenant)"
        )
    if parts.path.strip("/") or parts.query or parts.fragment:
        extra = (parts.path if parts.path.strip("/") else "") + (f"?{parts.query}" if parts.query else "")
        extra += f"#{parts.fragment}" if parts.fragment else ""
        raise ConfigError(
            f"{variable} must be the portal's base URL without a path, query or fragment, like {example}; "
            f"drop {extra!r} (the client adds /api/v1/activities/ itself)"
        )
    netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # IPv6 literal
        netloc = f"[{parts.hostname}]" + ("" if port is None else f":{port}")
    return f"{parts.scheme}://{netloc}"


@dataclass(frozen=True)
class MdcaSettings:
    """Where the tenant is, how to authenticate, and how fast to go.

    Secrets may be given as plain strings: they are kept as `Secret`. Blank strings count as unset.
    """

    api_url: str
    api_token: Secret | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    authority_host: str = DEFAULT_AUTHORITY_HOST
    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    # Field -> the environment variable it was read from, for messages that say what to fix (a tenants-file
    # tenant reads its own, `token_env: CONTOSO_MDCA_TOKEN`); unnamed fields are the MDCA_* variables.
    variables: tuple[tuple[str, str], ...] = ()

    def variable(self, field: str) -> str:
        """The variable `field` was read from.

        >>> named = MdcaSettings(api_url="http://127.0.0.1:1", api_token="t", variables=(("api_token", "C_TOKEN"),))
        >>> named.variable("api_token"), named.variable("client_id")
        ('C_TOKEN', 'MDCA_CLIENT_ID')
        """
        return dict(self.variables).get(field) or DEFAULT_VARIABLES[field]

    def __post_init__(self) -> None:
        for name in ("api_token", "client_secret"):
            object.__setattr__(self, name, _secret(getattr(self, name)))
        for name in ("tenant_id", "client_id"):
            object.__setattr__(self, name, (getattr(self, name) or "").strip() or None)
        object.__setattr__(self, "authority_host", (self.authority_host or "").strip() or DEFAULT_AUTHORITY_HOST)
        object.__setattr__(self, "api_url", check_base_url(self.api_url or ""))
        entra = {
            "MDCA_TENANT_ID": self.tenant_id,
            "MDCA_CLIENT_ID": self.client_id,
            "MDCA_CLIENT_SECRET": self.client_secret,
        }
        given = [name for name, value in entra.items() if value]
        if self.api_token and given:
            raise ConfigError(
                "Both kinds of credentials are set: MDCA_API_TOKEN and "
                f"{', '.join(given)}. Set only one kind: the legacy API token, or the Entra ID application "
                f"({', '.join(ENTRA_VARS)})."
            )
        if not self.api_token and not given:
            raise ConfigError(
                f"MDCA_API_URL is set ({self.api_url}) but no credentials are: set MDCA_API_TOKEN to a legacy API "
                f"token, or {', '.join(ENTRA_VARS)} for a Microsoft Entra ID application with Investigation.read."
            )
        if given and len(given) < len(entra):
            missing = [name for name in entra if name not in given]
            raise ConfigError(
                f"Entra ID credentials are incomplete: {', '.join(given)} set but {', '.join(missing)} missing."
            )
        if given:
            object.__setattr__(
                self, "authority_host", check_base_url(self.authority_host, variable="MDCA_AUTHORITY_HOST")
            )
        if isinstance(self.requests_per_minute, bool) or not isinstance(self.requests_per_minute, int):
            raise ConfigError(f"MDCA_REQUESTS_PER_MINUTE must be a whole number, got {self.requests_per_minute!r}")
        if not 0 <= self.requests_per_minute <= 6000:
            raise ConfigError(
                "MDCA_REQUESTS_PER_MINUTE must be between 1 and 6000 (the service allows 30), or 0 for no "
                f"client-side limit; got {self.requests_per_minute}"
            )

    @property
    def auth_kind(self) -> str:
        return "token" if self.api_token else "entra"


def _secret(value: str | Secret | None) -> Secret | None:
    if isinstance(value, Secret):
        return value if value.reveal() else None
    value = (value or "").strip()
    return Secret(value) if value else None
