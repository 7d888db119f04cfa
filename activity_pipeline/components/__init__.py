"""The project's Dagster component type, `ActivityTenants`, and the factories it builds the definitions with.

Imported lazily, so that `python -m activity_pipeline.components.partitions` (which `make run` calls) does not
load the component first.
"""

from typing import Any

__all__ = ["ActivityTenants", "tenants_definitions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from activity_pipeline.components import tenants

        return getattr(tenants, name)
    raise AttributeError(name)
