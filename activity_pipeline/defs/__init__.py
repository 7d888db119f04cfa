"""Instances only: `tenants/defs.yaml` names the component (`activity_pipeline.components`), which builds them."""
