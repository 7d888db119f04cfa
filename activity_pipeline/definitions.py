"""The project's one Definitions object: `dagster ... -m activity_pipeline.definitions`."""

import dagster as dg

defs = dg.Definitions()
