"""A client for the Defender for Cloud Apps Activities API. No Dagster imports: usable on its own.

>>> from activity_pipeline.mdca import MdcaClient, MdcaSettings, Scanner
>>> client = MdcaClient(MdcaSettings.from_env())                         # doctest: +SKIP
>>> for page in Scanner(client, start_ms, end_ms, slices=4):            # doctest: +SKIP
...     handle(page.raws)
"""

from activity_pipeline.mdca.client import MdcaClient, RequestStats, RetryPolicy, window_filters
from activity_pipeline.mdca.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    MdcaError,
    MdcaHTTPError,
    PermissionDeniedError,
    RetentionError,
    RetriesExhaustedError,
    ScanStalledError,
)
from activity_pipeline.mdca.ratelimit import RateLimiter
from activity_pipeline.mdca.scan import Page, RecordKeys, Scanner, ScanStats, choose_slices
from activity_pipeline.mdca.settings import MdcaSettings, Secret

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "MdcaClient",
    "MdcaError",
    "MdcaHTTPError",
    "MdcaSettings",
    "Page",
    "PermissionDeniedError",
    "RateLimiter",
    "RecordKeys",
    "RequestStats",
    "RetentionError",
    "RetriesExhaustedError",
    "RetryPolicy",
    "ScanStalledError",
    "ScanStats",
    "Scanner",
    "Secret",
    "choose_slices",
    "window_filters",
]
