"""A tenant's stored days and their rows in one small file, so that a daily run's cost does not grow with the
days kept: the row total in the asset's metadata and the DuckDB file's summary read it instead of every
day's manifest (180 manifests, or every Parquet footer).

    _index/tenant=<name>.json    {"days": {"YYYY-MM-DD": rows, ...}}

Each commit of a day updates it (a lock, then an atomic replace). It is derived data: when it is missing, or
a day's manifest changed after it (a day moved by `migrate`, a copy restored by hand), the next read
rebuilds it from the manifests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from activity_pipeline.storage.layout import STAGING, TenantPaths

# Reads every stored day's rows from the manifests: what the index is rebuilt from.
Rebuild = Callable[[], dict[dt.date, int]]


def _path(data: TenantPaths) -> Path:
    return data.index


@contextlib.contextmanager
def _locked(data: TenantPaths) -> Iterator[None]:
    (data.root / STAGING).mkdir(parents=True, exist_ok=True)
    with open(data.root / STAGING / f"index-{data.tenant}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write(data: TenantPaths, days: dict[str, int]) -> None:
    path = _path(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"days": dict(sorted(days.items()))}))
    os.replace(tmp, path)


def _rebuild(data: TenantPaths, rebuild: Rebuild) -> dict[str, int]:
    days = {day.isoformat(): rows for day, rows in rebuild().items()}
    _write(data, days)
    return days


def record_day(data: TenantPaths, day: dt.date, rows: int, rebuild: Rebuild) -> None:
    """A new version of `day` with `rows` rows was committed."""
    with _locked(data):
        days = _read(data)
        if days is None:
            _rebuild(data, rebuild)
            return
        days[day.isoformat()] = rows
        _write(data, days)


def _read(data: TenantPaths) -> dict[str, int] | None:
    try:
        return {k: int(v) for k, v in json.loads(_path(data).read_text())["days"].items()}
    except (FileNotFoundError, KeyError, ValueError):
        return None


def day_rows(data: TenantPaths, rebuild: Rebuild) -> dict[dt.date, int]:
    """The tenant's stored days and the rows of each (rebuilt from the manifests when the index is missing or
    older than the newest day folder)."""
    days = _read(data)
    if days is None or _stale(data):
        with _locked(data):
            days = _rebuild(data, rebuild)
    return {dt.date.fromisoformat(k): v for k, v in days.items()}


def _stale(data: TenantPaths) -> bool:
    """True when the tenant's folder of days changed after the index: a day folder was added or removed other
    than by a commit (which updates the index after its swap), so the folder's time is the later one."""
    try:
        return data.days.stat().st_mtime_ns > _path(data).stat().st_mtime_ns
    except FileNotFoundError:
        return data.days.exists()
