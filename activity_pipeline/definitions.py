"""The project's one Definitions object: `dagster ... -m activity_pipeline.definitions`."""

import dagster as dg

from activity_pipeline.defs.assets import activities
from activity_pipeline.defs.resources import mdca_from_env, storage_from_env

defs = dg.Definitions(
    assets=[activities],
    resources={"mdca": mdca_from_env(), "storage": storage_from_env()},
)
