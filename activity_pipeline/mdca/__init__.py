"""A client for the Defender for Cloud Apps Activities API. No Dagster imports: usable on its own.

>>> from activity_pipeline.mdca import MdcaClient, MdcaSettings, Scanner
>>> settings = MdcaSettings(api_url="https://contoso.eu2.portal.cloudappsecurity.com", api_token="...")
>>> client = MdcaClient(settings)                                        # doctest: +SKIP
>>> for page in Scanner(client, start_ms, end_ms, slices=4):            # doctest: +SKIP
...     handle(page.raws)

Modules: `settings` (what to reach and how), `auth`, `ratelimit`, `client` (one request, retried), `wire`
(an answer's body within a deadline and a size), `statuses` (what an error answer means), `redact` (server
text made safe for messages), `paging` (the server's cursor), `slices` (parallel parts of a window), `dedupe`,
`scan` (the driver), `body` (a page's bytes and who may rearrange them).
"""

from activity_pipeline.mdca.client import MdcaClient, RequestStats, RetryPolicy, window_filters
from activity_pipeline.mdca.dedupe import DigestSet
from activity_pipeline.mdca.errors import (
    AuthenticationError,
    BadRequestError,
    EndpointError,
    FilterIgnoredError,
    MdcaError,
    MdcaHTTPError,
    PermissionDeniedError,
    ProtocolError,
    RetriesExhaustedError,
    ScanStalledError,
)
from activity_pipeline.mdca.paging import PAGE_LIMIT, ServerCursor
from activity_pipeline.mdca.ratelimit import RateLimiter
from activity_pipeline.mdca.scan import Page, RecordKeys, Scanner, ScanStats
from activity_pipeline.mdca.settings import MdcaSettings, Secret
from activity_pipeline.mdca.slices import choose_slices
from activity_pipeline.pagebody import PageBody

__all__ = [
    "PAGE_LIMIT",
    "AuthenticationError",
    "BadRequestError",
    "DigestSet",
    "EndpointError",
    "FilterIgnoredError",
    "MdcaClient",
    "MdcaError",
    "MdcaHTTPError",
    "MdcaSettings",
    "Page",
    "PageBody",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimiter",
    "RecordKeys",
    "RequestStats",
    "RetriesExhaustedError",
    "RetryPolicy",
    "ScanStalledError",
    "ScanStats",
    "Scanner",
    "Secret",
    "ServerCursor",
    "choose_slices",
    "window_filters",
]
