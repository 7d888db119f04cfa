"""Small helpers shared by the tests: clients pointed at the demo tenant, scanning a day."""

from __future__ import annotations

import datetime as dt
from typing import Any

from activity_pipeline.demo_tenant.data import DAY_MS, day_start_ms
from activity_pipeline.mdca import MdcaClient, MdcaSettings, RateLimiter, RetryPolicy, Scanner, Secret
from activity_pipeline_tests.conftest import TOKEN

# Fast backoff, so that tests exercise retries without waiting like production would. The waits after a 429
# without Retry-After (0.2 s doubling, up to 1 s: about 5 s over 12 attempts) still outlast the test servers'
# 2 s throttle window, as production's (10 s doubling) outlast the service's minute: with 4 threads racing
# for each freed slot, waits capped at 0.2 s let an unlucky thread spend all 12 attempts inside one window.
FAST_RETRY = RetryPolicy(max_attempts=12, max_seconds=120, backoff_first=0.01, backoff_max=1.0, throttle_default=0.2)


def client_for(url: str, *, token: str = TOKEN, limiter: RateLimiter | None = None, **kwargs: Any) -> MdcaClient:
    settings = MdcaSettings(api_url=url, token=Secret(token), requests_per_minute=0)
    kwargs.setdefault("retry", FAST_RETRY)
    return MdcaClient(settings, limiter=limiter or RateLimiter(0), **kwargs)


def scan_day(client: MdcaClient, day: dt.date, **kwargs: Any) -> tuple[list[str], Scanner]:
    start = day_start_ms(day)
    scanner = Scanner(client, start, start + DAY_MS, **kwargs)
    ids = [row.id for page in scanner for row in page.rows]
    return ids, scanner
