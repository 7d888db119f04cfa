"""A stand-in for a Defender for Cloud Apps tenant's Activities API, served over real HTTP on loopback.

>>> from activity_pipeline.demo_tenant import DemoTenant, DemoTenantServer, TenantSpec
>>> tenant = DemoTenant(TenantSpec.last_complete_days(3, activities_per_day=5000))
>>> with DemoTenantServer(tenant) as server:          # doctest: +SKIP
...     print(server.url)                             # e.g. http://127.0.0.1:40123
"""

from activity_pipeline.demo_tenant.data import Outage, TenantSpec
from activity_pipeline.demo_tenant.on_demand import DemoTenantOnDemand
from activity_pipeline.demo_tenant.server import FAULT_KINDS, DemoTenantServer, ServerSettings
from activity_pipeline.demo_tenant.tenant import DemoTenant

DEMO_TOKEN = "demo-token"

__all__ = [
    "DEMO_TOKEN",
    "FAULT_KINDS",
    "DemoTenant",
    "DemoTenantOnDemand",
    "DemoTenantServer",
    "Outage",
    "ServerSettings",
    "TenantSpec",
]
