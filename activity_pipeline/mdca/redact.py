"""Text from a server is untrusted input: before it reaches a message, a log line, metadata or an exception, it
is cut to a size, stripped of control characters, and cleared of anything that looks like a credential.

Proxies and gateways echo a request's headers in their error pages, so a body can carry the very token the
client sent. `redact` removes the configured secrets by value, and by shape what could be one: an
`Authorization` header's value, a `Bearer`/`Token`/`Basic` credential, a JWT, a `client_secret=` or `sig=`
parameter.

>>> redact('{"detail": "bad header Authorization: Token abc123def456"}')
'{"detail": "bad header Authorization: [redacted]"}'
>>> redact("seen: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl and more")
'seen: [redacted JWT] and more'
>>> redact("the token was s3cr3t-value", secrets=["s3cr3t-value"])
'the token was [redacted]'
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
# Server text in a message is a hint, not a document: this much is enough to recognise an error page.
MAX_SERVER_TEXT = 500

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A JWT (an Entra access token among them): three base64url parts, the first a JSON header.
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[redacted JWT]"),
    # An Authorization header as echoed in JSON, a header dump or a Python repr: its whole value.
    (
        re.compile(
            r"""(?i)((?:proxy-)?authorization["']?\s*[:=]\s*["']?)(?:(?:bearer|token|basic)\s+)?(?!\[redacted)[^"'\s,;}\]<&]+"""
        ),
        r"\1" + REDACTED,
    ),
    # A credential after its scheme, wherever it stands.
    (re.compile(r"(?i)\b(bearer|token|basic)(\s+|%20)(?!\[redacted)[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + REDACTED),
    # Form and query parameters that carry secrets (OAuth's client_secret, an Azure SAS signature, keys).
    (
        re.compile(
            r"""(?i)\b(client_secret|access_token|refresh_token|sig|password|api[_-]?key|token)(["']?\s*[=:]\s*["']?)(?!\[redacted)[^"'\s&,;}<]+"""
        ),
        r"\1\2" + REDACTED,
    ),
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def redact(text: str, secrets: Iterable[str] = (), *, limit: int | None = None) -> str:
    """`text` without the given secrets, credential-shaped values or control characters; cut to `limit`."""
    for secret in secrets:
        # A secret too short to be told from ordinary words would mangle messages and protect nothing.
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    text = _CONTROL.sub(" ", text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return text


def server_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Text a server sent, fit for a message: redacted and cut to MAX_SERVER_TEXT characters."""
    return redact(text, secrets, limit=MAX_SERVER_TEXT)
