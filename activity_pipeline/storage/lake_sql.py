"""DuckDB over the dataset on object storage (`storage.lake`): the extensions, loaded from the venv, a secret
from the cloud's credential chain, and the URLs DuckDB reads.

DuckDB downloads its extensions on first use; offline machines can't. The package pins the registry's builds
of the ones needed here (`duckdb-extension-httpfs`, `-aws`, `-azure`, for the pinned DuckDB) and loads them
by path with downloads turned off, so every machine reads the same way.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path


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


def _azure_secret(url: str, script: bool) -> str:
    env = os.environ

    def value(name: str) -> str:
        """The variable's value as SQL: read by the CLI at start (script), or its value now (in memory)."""
        return f"getenv('{name}')" if script else "'" + env[name].replace("'", "''") + "'"

    if env.get("AZURE_STORAGE_USE_EMULATOR", "").lower() in ("1", "true"):
        # Azurite (delta-rs and obstore's `use_emulator`): the account and key come from the same variables.
        account, blob = env.get("AZURE_STORAGE_ACCOUNT_NAME", ""), env.get("AZURITE_BLOB_STORAGE_URL", "")
        if not account or not env.get("AZURE_STORAGE_ACCOUNT_KEY"):
            raise RuntimeError(
                "AZURE_STORAGE_USE_EMULATOR is set: set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY to "
                "the emulator's account and key too (DuckDB reads the emulator with them)."
            )
        endpoint = f"{(blob or 'http://127.0.0.1:10000').rstrip('/')}/{account}"
        conn = (
            f"'DefaultEndpointsProtocol=http;AccountName={account};AccountKey=' || {value('AZURE_STORAGE_ACCOUNT_KEY')}"
        )
        return f"TYPE azure, CONNECTION_STRING {conn} || ';BlobEndpoint={endpoint};'"
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


def duckdb_url(url: str) -> str:
    """The URL DuckDB reads: Data Lake URLs (abfs[s]://container@account.dfs.core.windows.net/path) as their
    Blob twins (az://container/path, the account in the session's secret). Every Data Lake Storage account
    answers the Blob API over the same data, and so does Azurite, which has no Data Lake endpoint."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("abfs", "abfss") and parts.username:
        return f"az://{parts.username}{parts.path}"
    return url
