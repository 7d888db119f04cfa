"""Settings for reaching a tenant, read from the environment and checked before any request is made.

>>> s = MdcaSettings.from_env({"MDCA_API_URL": "https://contoso.eu2.portal.cloudappsecurity.com",
...                            "MDCA_API_TOKEN": "abc"})
>>> s.auth_kind, s.api_url, s.token
('token', 'https://contoso.eu2.portal.cloudappsecurity.com', Secret('********'))
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from activity_pipeline.mdca.errors import ConfigError

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
MDCA_SCOPE = "05a65629-4c1b-48c1-a78b-804c4abdd4af/.default"
DEFAULT_REQUESTS_PER_MINUTE = 30
ENTRA_VARS = ("MDCA_TENANT_ID", "MDCA_CLIENT_ID", "MDCA_CLIENT_SECRET")


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
        raise ConfigError(
            f"{variable} must be the portal's base URL without a path, like {example}; "
            f"drop {parts.path or '?' + parts.query!r} (the client adds /api/v1/activities/ itself)"
        )
    netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # IPv6 literal
        netloc = f"[{parts.hostname}]" + ("" if port is None else f":{port}")
    return f"{parts.scheme}://{netloc}"


@dataclass(frozen=True)
class MdcaSettings:
    """Where the tenant is, how to authenticate, and how fast to go."""

    api_url: str
    token: Secret | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    authority_host: str = DEFAULT_AUTHORITY_HOST
    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_url", check_base_url(self.api_url))
        entra = {
            "MDCA_TENANT_ID": self.tenant_id,
            "MDCA_CLIENT_ID": self.client_id,
            "MDCA_CLIENT_SECRET": self.client_secret,
        }
        given = [name for name, value in entra.items() if value]
        if self.token and given:
            raise ConfigError(
                "Both kinds of credentials are set: MDCA_API_TOKEN and "
                f"{', '.join(given)}. Set only one kind: the legacy API token, or the Entra ID application "
                f"({', '.join(ENTRA_VARS)})."
            )
        if not self.token and not given:
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
        return "token" if self.token else "entra"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MdcaSettings:
        """Read MDCA_* variables. MDCA_API_URL must be set: without it the caller uses the demo tenant."""
        env = os.environ if env is None else env
        url = env.get("MDCA_API_URL", "").strip()
        if not url:
            raise ConfigError("MDCA_API_URL is not set")
        return cls(
            api_url=url,
            token=_secret(env.get("MDCA_API_TOKEN")),
            tenant_id=(env.get("MDCA_TENANT_ID") or "").strip() or None,
            client_id=(env.get("MDCA_CLIENT_ID") or "").strip() or None,
            client_secret=_secret(env.get("MDCA_CLIENT_SECRET")),
            authority_host=(env.get("MDCA_AUTHORITY_HOST") or "").strip() or DEFAULT_AUTHORITY_HOST,
            requests_per_minute=parse_requests_per_minute(env.get("MDCA_REQUESTS_PER_MINUTE")),
        )


def parse_requests_per_minute(text: str | None) -> int:
    if text is None or not text.strip():
        return DEFAULT_REQUESTS_PER_MINUTE
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"MDCA_REQUESTS_PER_MINUTE must be a whole number like 30, got {text!r}") from None


def _secret(value: str | None) -> Secret | None:
    value = (value or "").strip()
    return Secret(value) if value else None
