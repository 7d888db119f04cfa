"""Dagster objects only: partitions, resources, assets, checks and schedules. Logic lives outside."""
