"""The project's Dagster components."""

from activity_pipeline.components.tenants import ActivityTenants, tenants_definitions

__all__ = ["ActivityTenants", "tenants_definitions"]
