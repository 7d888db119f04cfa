"""DuckDB over the dataset on object storage (`storage.lake`): the extensions, loaded from the venv, a secret
from the cloud's credential chain, and the views' sources over the Delta table's current files.

DuckDB downloads its extensions on first use; offline machines can't. The package pins the registry's builds
of the ones needed here (`duckdb-extension-httpfs`, `-aws`, `-azure`, for the pinned DuckDB) and loads them
by path with downloads turned off, so every machine reads the same way.
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.parse
from pathlib import Path
from typing import Any

from activity_pipeline.storage.lake import HEALTH, Lake, _partition, duckdb_url


def extension_path(name: str) -> Path:
    """The DuckDB extension `name` from its pinned Python package (`duckdb-extension-<name>`): loaded from the
    virtual environment, so DuckDB never downloads it (offline machines work the same)."""
    import importlib

    try:
        module = importlib.import_module(f"duckdb_extension_{name}")
    except ImportError:
        raise RuntimeError(
            f"The DuckDB extension {name!r} is not installed; it comes with this package's dependencies "
            f"(duckdb-extension-{name}). Reinstall the package: pip install -e ."
        ) from None
    import duckdb

    folder = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    path = folder / f"{name}.duckdb_extension"
    if not path.exists():
        raise RuntimeError(
            f"duckdb-extension-{name} carries no build for DuckDB {duckdb.__version__} (looked for {path}); "
            "install the same version of both (pyproject.toml pins them together)."
        )
    return path


def duckdb_setup(url: str, *, script: bool = False) -> list[str]:
    """SQL that lets a DuckDB session read the dataset at `url`: load the extensions from the venv, and a
    temporary secret (in memory, never in the DuckDB file) that takes credentials from the cloud's chain.

    `script`: for the DuckDB CLI's `-init` file. A key or connection string in the environment is then read
    by the CLI's `getenv` when the session starts, and never written into the script.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    names = {"s3": ["httpfs", "aws"], "gs": ["httpfs"]}.get(scheme, ["azure"])
    sql = [f"LOAD '{extension_path(n)}'" for n in names]
    sql += ["SET autoinstall_known_extensions = false", "SET autoload_known_extensions = false"]
    if scheme == "s3":
        options = ["TYPE s3", "PROVIDER credential_chain"]
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            options.append(f"REGION '{region}'")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            parts = urllib.parse.urlsplit(endpoint)
            options += [f"ENDPOINT '{parts.netloc}'", "URL_STYLE 'path'", f"USE_SSL {parts.scheme == 'https'}"]
        sql.append(f"CREATE OR REPLACE TEMPORARY SECRET activity_data ({', '.join(options)})")
    elif scheme == "gs":
        sql.append("CREATE OR REPLACE TEMPORARY SECRET activity_data (TYPE gcs, PROVIDER credential_chain)")
    else:
        sql.append(f"CREATE OR REPLACE TEMPORARY SECRET activity_data ({_azure_secret(url, script)})")
    return sql


# Azurite's account and key are public constants, the same in every copy of the emulator.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _azure_secret(url: str, script: bool) -> str:
    env = os.environ

    def value(name: str) -> str:
        """The variable's value as SQL: read by the CLI at start (script), or its value now (in memory)."""
        return f"getenv('{name}')" if script else "'" + env[name].replace("'", "''") + "'"

    if env.get("AZURE_STORAGE_USE_EMULATOR", "").lower() in ("1", "true"):
        blob = env.get("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000").rstrip("/")
        conn = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={blob}/{AZURITE_ACCOUNT};"
        )
        return f"TYPE azure, CONNECTION_STRING '{conn}'"
    if env.get("AZURE_STORAGE_CONNECTION_STRING"):
        return f"TYPE azure, CONNECTION_STRING {value('AZURE_STORAGE_CONNECTION_STRING')}"
    account = env.get("AZURE_STORAGE_ACCOUNT_NAME") or _account(url)
    if env.get("AZURE_STORAGE_ACCOUNT_KEY"):
        key = value("AZURE_STORAGE_ACCOUNT_KEY")
        return f"TYPE azure, CONNECTION_STRING 'AccountName={account};AccountKey=' || {key} || ';'"
    return f"TYPE azure, PROVIDER credential_chain, ACCOUNT_NAME '{account}'"


def _account(url: str) -> str:
    host = urllib.parse.urlsplit(url).netloc
    return host.split("@", 1)[1].split(".", 1)[0] if "@" in host else ""


def lake_sources(
    lake: Lake, files: dict[tuple[str, dt.date], list[dict[str, Any]]]
) -> tuple[str | None, str | None, str]:
    """For `storage.duckdb_views`, from the table's current `files` (`Lake.files()`): the `activities` source
    over them (None: no files), the glob of the count checks' findings (None: none yet), and the stored
    (tenant, date) pairs, as SQL."""
    uris = sorted(
        duckdb_url(f"{lake.table_url}/{_partition(tenant, day)}/{f['name']}")
        for (tenant, day), day_files in files.items()
        for f in day_files
    )
    source = None
    if uris:
        listed = ", ".join(_sql(u) for u in uris)
        source = (
            f"SELECT tenant, * EXCLUDE (tenant) FROM read_parquet([{listed}], hive_partitioning = true, "
            "hive_types = {'tenant': VARCHAR, 'date': DATE})"
        )
    health = duckdb_url(f"{lake.url}/{HEALTH}/tenant=*/*.json") if lake.keys(HEALTH) else None
    pairs = sorted(files)
    stored = (
        "SELECT * FROM (VALUES "
        + ", ".join(f"({_sql(t)}, DATE '{d.isoformat()}')" for t, d in pairs)
        + ") AS s(tenant, date)"
        if pairs
        else "SELECT NULL::VARCHAR AS tenant, NULL::DATE AS date WHERE false"
    )
    return source, health, stored


def _sql(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
