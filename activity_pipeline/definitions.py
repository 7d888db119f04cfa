"""The project's one Definitions object: `dagster ... -m activity_pipeline.definitions`."""

import dagster as dg

from activity_pipeline.defs.assets import activities, activities_duckdb
from activity_pipeline.defs.automation import daily_activities, daily_schedule, late_arrivals
from activity_pipeline.defs.checks import CHECKS
from activity_pipeline.defs.resources import mdca_from_env, storage_from_env

defs = dg.Definitions(
    assets=[activities, activities_duckdb],
    asset_checks=CHECKS,
    jobs=[daily_activities],
    schedules=[daily_schedule],
    sensors=[late_arrivals],
    resources={"mdca": mdca_from_env(), "storage": storage_from_env()},
)
