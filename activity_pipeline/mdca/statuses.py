"""What an answer of the Activities API that is neither 200 nor retried means, and what to do about it."""

from __future__ import annotations

import requests

from activity_pipeline.mdca.errors import (
    AuthenticationError,
    BadRequestError,
    MdcaHTTPError,
    PermissionDeniedError,
)
from activity_pipeline.mdca.redact import server_text


def status_error(
    status: int, response: requests.Response, path: str, *, api_url: str, host: str, hint: str, detail: str
) -> MdcaHTTPError:
    """The error an answer of `status` (not 200, not retried) means, saying what to check. `detail` is the
    server's own text, redacted; `hint` says where the tenant's credentials come from."""
    if status == 400:
        return BadRequestError(
            f"The API refused the request to {path} (400): {detail}. The request carries the day's window and "
            "the tenant's own API filters (`filters:` in the tenants file, MDCA_FILTERS): check those against the "
            "filters the API takes (docs/configuration.md); if they are right, the service changed what it "
            "accepts: report it with this message. Nothing was stored or changed.",
            status=400,
            path=path,
        )
    if 300 <= status < 400:
        return _redirected(status, response, path, api_url=api_url, host=host)
    if status == 401:
        return AuthenticationError(
            f"The API rejected the credentials (401: {detail}) at {path}; {hint}",
            status=401,
            path=path,
        )
    if status == 403:
        return PermissionDeniedError(
            f"The credentials are valid but not allowed to read activities (403: {detail}) at {path}. "
            "Grant the Investigation.read permission: to the API token's user, or as an application "
            "permission with admin consent to the Entra ID app.",
            status=403,
            path=path,
        )
    if status == 404:
        return MdcaHTTPError(
            f"{api_url}{path} does not exist (404: {detail}); check that MDCA_API_URL is the "
            "portal's base URL, like https://contoso.eu2.portal.cloudappsecurity.com",
            status=404,
            path=path,
        )
    return MdcaHTTPError(
        f"Unexpected HTTP {status} from {path}: {detail}. The Activities API does not answer so: check that "
        "MDCA_API_URL is the portal's base URL (like https://contoso.eu2.portal.cloudappsecurity.com) and what "
        "answers there (a proxy, a gateway). Nothing was retried, stored or changed.",
        status=status,
        path=path,
    )


def _redirected(status: int, response: requests.Response, path: str, *, api_url: str, host: str) -> MdcaHTTPError:
    """A redirect, named as one: never followed, so the credentials go nowhere else (nor get dropped on the way
    and the token blamed)."""
    from urllib.parse import urljoin, urlsplit

    location = server_text(response.headers.get("Location") or "")[:300]
    where = urlsplit(urljoin(api_url + path, location)) if location else None
    target = f"{where.scheme}://{where.netloc}{where.path}" if where is not None else "nowhere (no Location)"
    moved = where is not None and where.netloc and where.netloc != urlsplit(api_url).netloc
    hint = (
        f" If {where.scheme}://{where.netloc} is the tenant's portal, set MDCA_API_URL to it."
        if moved and where is not None
        else ""
    )
    return MdcaHTTPError(
        f"{host} answered {path} with a redirect (HTTP {status}) to {target}, not the API's answer. It was "
        "not followed: a redirect would carry the credentials to another address, or drop them (and the "
        "service would then refuse them). MDCA_API_URL must be the API's own base URL, like "
        f"https://contoso.eu2.portal.cloudappsecurity.com, with nothing in front of it that redirects.{hint}",
        status=status,
        path=path,
    )
