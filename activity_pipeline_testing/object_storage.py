"""Object storage emulators on loopback, for the lake tests: moto's S3 server and Azurite (Blob and Data Lake).

Each starts on a free port when first asked for and stops when the block ends. A missing emulator raises
EmulatorMissing with the command that installs it (the tests turn it into a skip); `.ci/run` installs both.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import requests

from activity_pipeline_testing.helpers import REPO, free_port


class EmulatorMissing(RuntimeError):
    """The emulator is not installed here; the message says how to install it."""


# Azurite's account and key are public constants, the same in every copy of the emulator.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# A distinctive secret, so that a search for it in logs and files can only find a leak.
S3_SECRET = "moto-secret-4b9e1d7a-do-not-log"


def _wait(port: int, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within 60 s")


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server; yields its endpoint URL."""
    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        raise EmulatorMissing("moto's server is not installed: pip install -e '.[dev]' (make test does it)")
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
    with log.open("w") as out:
        proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    try:
        _wait(port, proc, "moto_server", log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.unlink(missing_ok=True)


def azurite_binary() -> str | None:
    local = REPO / ".azurite" / "node_modules" / ".bin" / "azurite-blob"
    return str(local) if local.exists() else shutil.which("azurite-blob")


@contextlib.contextmanager
def azurite_server() -> Iterator[str]:
    """Azurite's Blob service (which also answers the Data Lake URLs delta-rs uses); yields its URL."""
    binary = azurite_binary()
    if binary is None:
        raise EmulatorMissing("Azurite is not installed: npm install --prefix .azurite azurite (.ci/run does it)")
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="azurite-"))
    log = folder / "azurite.log"
    command = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(folder),
               "--skipApiVersionCheck", "--loose", "--silent"]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        _wait(port, proc, "Azurite", log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()  # Azurite lingers for a while after SIGTERM; its data is thrown away anyway
        proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def s3_env(endpoint: str) -> dict[str, str]:
    """The standard AWS variables that point delta-rs, obstore and DuckDB at the emulator."""
    return {
        "AWS_ACCESS_KEY_ID": "moto-key",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }


def azure_env(endpoint: str) -> dict[str, str]:
    """The standard variables for Azurite: object_store's emulator switch, its URL, and its account and key."""
    return {
        "AZURE_STORAGE_USE_EMULATOR": "true",
        "AZURITE_BLOB_STORAGE_URL": endpoint,
        "AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
        "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY,
    }


def new_bucket(kind: str, endpoint: str) -> str:
    """A new, empty bucket or container; returns the dataset URL inside it."""
    name = f"lake-{uuid.uuid4().hex[:12]}"
    if kind == "s3":
        response = requests.put(f"{endpoint}/{name}", timeout=10)  # moto takes an unsigned CreateBucket
        response.raise_for_status()
        return f"s3://{name}/mdca"
    from azure.storage.blob import BlobServiceClient

    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )
    BlobServiceClient.from_connection_string(conn).create_container(name)
    return f"az://{name}/mdca"


def new_dataset_url(kind: str, endpoint: str) -> tuple[str, dict[str, str]]:
    """A new, empty dataset URL on the emulator at `endpoint`, and the cloud's variables that reach it: `kind`
    "s3" (s3://), "azure-blob" (az://) or "azure-data-lake" (abfss://container@account.dfs.core.windows.net/)."""
    cloud = "s3" if kind == "s3" else "azure"
    url = new_bucket(cloud, endpoint)
    if kind == "azure-data-lake":
        container = url.removeprefix("az://").split("/", 1)[0]
        url = f"abfss://{container}@{AZURITE_ACCOUNT}.dfs.core.windows.net/mdca"
    return url, s3_env(endpoint) if cloud == "s3" else azure_env(endpoint)
