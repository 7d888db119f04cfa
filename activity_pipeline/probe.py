"""`python -m activity_pipeline.probe` (`make tenants PROBE=1`): the configuration checked and listed as `make tenants`
does, and one cheap authenticated request to each real tenant (its count of the last hour), each one's result on its
line, never a secret. Exit 2 on a configuration mistake, 1 when any tenant's request fails, else 0."""

from __future__ import annotations

import sys
import time

from activity_pipeline import config
from activity_pipeline.components.resources import tenant_resource
from activity_pipeline.config import TenantConfig


def probe(tenant: TenantConfig) -> tuple[bool, str]:
    """One authenticated request to the tenant: its count of the last hour. (ok, what to print)."""
    now = int(time.time() * 1000)
    started = time.monotonic()
    try:
        with tenant_resource(tenant).client() as client:
            total = client.count(now - 3_600_000, now)
    except Exception as exc:  # whatever the tenant answered: its line says it, the next tenant is still probed
        return False, f"FAILED: {' '.join(str(exc).split())[:600]}"
    return True, f"ok: the API answered in {time.monotonic() - started:.1f} s ({total:,} activities in the last hour)"


if __name__ == "__main__":
    sys.exit(config.main(sys.argv[1:], probe=probe))
