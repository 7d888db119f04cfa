"""Where alerts go: the tenants file's top-level `alerts:` list, checked when the definitions load, and delivery.

    alerts:
      - kind: teams                 # Microsoft Teams, a Workflows webhook ("When a Teams webhook request is received")
        url_env: TEAMS_WEBHOOK_URL  # the variable that holds the webhook's URL (it carries a signature: a secret)
      - kind: slack                 # a Slack incoming webhook
        url_env: SLACK_WEBHOOK_URL
        tenants: [contoso]          # optional: only these tenants' alerts
      - kind: webhook               # a JSON POST of `Alert.as_json()` to any URL
        url_env: SOC_WEBHOOK_URL
        ui_url: https://dagster.example.com   # optional, on any entry: links each alert to its run in the UI
      - kind: email                 # SMTP with STARTTLS (always)
        smtp_host: smtp.example.com
        smtp_port: 587              # default 587
        from: mdca-pipeline@example.com
        to: [soc@example.com]
        username_env: SMTP_USER     # optional, with password_env
        password_env: SMTP_PASSWORD

Secrets are named by variable, never written in the file, as for tenants; the variables are read when an alert is
sent. No message of this module repeats a webhook URL or a password, even when the receiver's error does.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import smtplib
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from activity_pipeline.alerts.message import Alert
from activity_pipeline.errors import ConfigError
from activity_pipeline.mdca.redact import redact
from activity_pipeline.mdca.settings import is_loopback

KINDS = ("teams", "slack", "webhook", "email")
_COMMON_KEYS = ("kind", "tenants", "ui_url")
KEYS = {
    "teams": (*_COMMON_KEYS, "url_env"),
    "slack": (*_COMMON_KEYS, "url_env"),
    "webhook": (*_COMMON_KEYS, "url_env"),
    "email": (*_COMMON_KEYS, "smtp_host", "smtp_port", "from", "to", "username_env", "password_env"),
}
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
ATTEMPTS = 3


class AlertDeliveryError(RuntimeError):
    """An alert could not be delivered; the message names the destination, never its URL or password."""


@dataclasses.dataclass(frozen=True)
class Destination:
    kind: str
    # Where it was defined, for messages: "alert 2 (line 14 of /etc/tenants.yaml)".
    origin: str
    # None: every tenant's alerts.
    tenants: frozenset[str] | None = None
    ui_url: str | None = None
    url_env: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    sender: str | None = None
    recipients: tuple[str, ...] = ()
    username_env: str | None = None
    password_env: str | None = None

    def wants(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants

    @property
    def name(self) -> str:
        """The destination, for logs: its kind and the variable that holds its address (never the address)."""
        if self.url_env:
            return f"{self.kind} ({self.url_env})"
        return f"email ({self.smtp_host}, to {len(self.recipients)})"

    def send(self, alert: Alert) -> None:
        """Deliver `alert`, retrying a refused connection or a 5xx/429 twice; AlertDeliveryError otherwise."""
        secrets = [v for v in (self._value(self.url_env), self._value(self.password_env)) if v]
        last: str = ""
        for attempt in range(ATTEMPTS):
            try:
                if self.kind == "email":
                    self._send_email(alert)
                else:
                    self._post(alert)
                return
            except _Retryable as exc:
                last = str(exc)
            except (OSError, smtplib.SMTPException, requests.RequestException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < ATTEMPTS:
                time.sleep(2**attempt)
        raise AlertDeliveryError(f"{self.origin}, {self.name}: the alert was not delivered: {redact(last, secrets)}")

    def _value(self, variable: str | None) -> str:
        return (os.environ.get(variable) or "").strip() if variable else ""

    def _post(self, alert: Alert) -> None:
        body = {"teams": alert.teams_card, "slack": alert.slack_message}.get(self.kind, alert.as_json)()
        try:
            response = requests.post(self._value(self.url_env), json=body, timeout=(5, 15))
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retryable(f"{type(exc).__name__} (the receiver did not answer)") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"the receiver answered {response.status_code}")
        if response.status_code >= 400:
            raise AlertDeliveryError(
                f"{self.origin}, {self.name}: the receiver refused the alert ({response.status_code}); check that "
                f"{self.url_env} holds the webhook's current URL"
            )

    def _send_email(self, alert: Alert) -> None:
        assert self.smtp_host and self.sender
        try:
            with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=15) as smtp:
                smtp.starttls(context=ssl.create_default_context())
                if self.username_env and self.password_env:
                    smtp.login(self._value(self.username_env), self._value(self.password_env))
                smtp.send_message(alert.email(self.sender, list(self.recipients)))
        except (ConnectionRefusedError, TimeoutError, smtplib.SMTPServerDisconnected) as exc:
            raise _Retryable(f"{type(exc).__name__} (the SMTP server did not answer)") from None


class _Retryable(Exception):
    pass


def parse_alerts(
    entries: Any, lines: list[int], path: Path, env: Mapping[str, str], tenants: set[str]
) -> tuple[Destination, ...]:
    """The `alerts:` list of the tenants file at `path`, checked; ConfigError names the entry, its line and the fix.
    `lines` holds each entry's line; `tenants`, the names the file defines."""
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: `alerts:` is a list of destinations, each starting with `- kind: ...`")
    return tuple(
        _destination(entry, line, f"alert {n} (line {line} of {path})", env, tenants)
        for n, (entry, line) in enumerate(zip(entries, lines, strict=True), start=1)
    )


def _destination(entry: Any, line: int, origin: str, env: Mapping[str, str], tenants: set[str]) -> Destination:
    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{origin}: {problem}")

    if not isinstance(entry, dict) or entry.get("kind") not in KINDS:
        got = entry.get("kind") if isinstance(entry, dict) else entry
        raise fail(f"`kind` must be one of {', '.join(KINDS)}; got {got!r}")
    kind = entry["kind"]
    for key in entry:
        if key not in KEYS[kind]:
            # `url:` or `password:` is a secret written in the file: its variable's key is the one meant.
            close = [f"{key}_env"] if f"{key}_env" in KEYS[kind] else []
            close = close or difflib.get_close_matches(str(key), KEYS[kind], n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            secret = " Secrets are named by variable (`url_env`, `password_env`), never written here." if any(
                w in str(key).lower() for w in ("url", "password", "token", "secret")
            ) else ""  # fmt: skip
            raise fail(f"unknown key `{key}`{hint}; a {kind} alert takes: {', '.join(KEYS[kind])}.{secret}")
    names = entry.get("tenants")
    if names is not None:
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise fail("`tenants` is a list of tenant names, like [contoso, fabrikam]")
        unknown = sorted(set(names) - tenants)
        if unknown:
            raise fail(f"`tenants` names {', '.join(unknown)}, not defined in this file ({', '.join(sorted(tenants))})")
    ui_url = entry.get("ui_url")
    if ui_url is not None:
        parts = urllib.parse.urlsplit(str(ui_url))
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.password:
            raise fail(f"`ui_url` is the Dagster UI's base URL, like https://dagster.example.com; got {ui_url!r}")
    common = {"kind": kind, "origin": origin, "tenants": frozenset(names) if names else None}
    common["ui_url"] = str(ui_url).rstrip("/") if ui_url else None
    if kind != "email":
        variable = _variable(entry, "url_env", env, fail, required=True)
        url = urllib.parse.urlsplit(env[variable].strip())  # type: ignore[index]
        if url.scheme != "https" and not (url.scheme == "http" and is_loopback(url.hostname or "")):
            # The value is a secret: say what is wrong with it, never what it is.
            raise fail(f"{variable} must hold an https:// URL (plain http only on loopback)")
        return Destination(url_env=variable, **common)
    host, sender, to = entry.get("smtp_host"), entry.get("from"), entry.get("to")
    if not isinstance(host, str) or not host.strip():
        raise fail("`smtp_host` is missing: the SMTP server's name, like smtp.office365.com")
    port = entry.get("smtp_port", 587)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise fail(f"`smtp_port` must be a port number (587 for STARTTLS); got {port!r}")
    if not isinstance(sender, str) or not _ADDRESS.fullmatch(sender):
        raise fail(f"`from` must be an e-mail address; got {sender!r}")
    to = [to] if isinstance(to, str) else to
    if not isinstance(to, list) or not to or not all(isinstance(a, str) and _ADDRESS.fullmatch(a) for a in to):
        raise fail(f"`to` must be an e-mail address or a list of them; got {entry.get('to')!r}")
    username = _variable(entry, "username_env", env, fail, required=False)
    password = _variable(entry, "password_env", env, fail, required=False)
    if bool(username) != bool(password):
        raise fail("give both `username_env` and `password_env`, or neither (a server that needs no login)")
    return Destination(
        smtp_host=host.strip(), smtp_port=port, sender=sender, recipients=tuple(to), username_env=username,
        password_env=password, **common,
    )  # fmt: skip


def _variable(entry: dict, key: str, env: Mapping[str, str], fail: Any, *, required: bool) -> str | None:
    variable = entry.get(key)
    if variable is None and not required:
        return None
    if not isinstance(variable, str) or not _VARIABLE.fullmatch(variable):
        # Not repeated: it may be the secret itself.
        raise fail(f"`{key}` must name an environment variable (like SLACK_WEBHOOK_URL), not hold a value")
    if not (env.get(variable) or "").strip():
        raise fail(f"`{key}` names the variable {variable}, which is not set (or is empty); set it, or fix the name")
    return variable
