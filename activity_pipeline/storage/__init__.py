"""Parquet schema and writer, DuckDB views: storage with no Dagster imports."""
