"""Where a tenant's files live under the data directory (`ACTIVITY_DATA_DIR`). The only code that knows.

    activities/tenant=<name>/date=YYYY-MM-DD/    the tenant's days (`storage.local`), hive-style, so any
                                                 engine reads `tenant` and `date` as columns
    _health/tenant=<name>/YYYY-MM-DD.json        the count check's last word on each day
    _verified/tenant=<name>/YYYY-MM-DD.json      the last verification of each day (`make verify`)
    _index/tenant=<name>.json                    the tenant's days and their rows (`storage.index`)
    .staging/tenant=<name>/                      work in progress and day locks, for both backends; never
                                                 under activities/
    activities.duckdb                            views over every tenant (`storage.duckdb_views`)

With the dataset on object storage (`storage.lake`), only `.staging/` and `activities.duckdb` are used here.

>>> paths = TenantPaths(Path("/srv/mdca"), "contoso")
>>> paths.day_dir(dt.date(2026, 11, 24))
PosixPath('/srv/mdca/activities/tenant=contoso/date=2026-11-24')
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from activity_pipeline.storage.errors import StorageLocationError

DATASET = "activities"
STAGING = ".staging"
HEALTH = "_health"
# One audit record per day deleted for the tenant's `keep_days` (`storage.core.DeletedDay`).
DELETED = "_deleted"
INDEX = "_index"
# The last verification of each stored day (`storage.integrity.Verification`), beside the findings.
VERIFIED = "_verified"
# Under a tenant's staging folder: scans that were not swapped in (see `StagedDay.keep_aside`).
KEPT_ASIDE = "kept-aside"


def check_root(root: Path, variable: str = "ACTIVITY_DATA_DIR") -> None:
    """Raise StorageLocationError unless `root` is a folder, or could be created as one.

    >>> check_root(Path("/etc/hostname"))
    Traceback (most recent call last):
    ...
    activity_pipeline.storage.errors.StorageLocationError: ACTIVITY_DATA_DIR (/etc/hostname) is a file, not a folder...
    """
    path = Path(root)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or existing.is_dir():
        return
    what = "is a file" if existing == path else f"lies under {existing}, which is a file"
    raise StorageLocationError(
        f"{variable} ({path}) {what}, not a folder. Point {variable} at a folder (it is created if missing)."
    )


@dataclasses.dataclass(frozen=True)
class TenantPaths:
    """Where one tenant's files are under `root`."""

    root: Path
    tenant: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @property
    def days(self) -> Path:
        """The folder that holds the tenant's `date=YYYY-MM-DD` folders."""
        return self.root / DATASET / f"tenant={self.tenant}"

    @property
    def staging(self) -> Path:
        return self.root / STAGING / f"tenant={self.tenant}"

    @property
    def health(self) -> Path:
        return self.root / HEALTH / f"tenant={self.tenant}"

    @property
    def deleted(self) -> Path:
        return self.root / DELETED / f"tenant={self.tenant}"

    @property
    def verified(self) -> Path:
        return self.root / VERIFIED / f"tenant={self.tenant}"

    @property
    def index(self) -> Path:
        return self.root / INDEX / f"tenant={self.tenant}.json"

    def day_dir(self, day: dt.date) -> Path:
        return self.days / f"date={day.isoformat()}"


@dataclasses.dataclass
class Adopted:
    """What `adopt_legacy_days` did."""

    days: list[dt.date] = dataclasses.field(default_factory=list)
    # Days the tenant already had in the new layout: the old copy is left where it was, for a person to judge.
    conflicts: list[dt.date] = dataclasses.field(default_factory=list)


def legacy_days(root: Path) -> list[Path]:
    """Day folders of the layout before tenants (`activities/date=YYYY-MM-DD/`), oldest first."""
    return sorted(p for p in (Path(root) / DATASET).glob("date=*") if p.is_dir())


def adopt_legacy_days(data: TenantPaths) -> Adopted:
    """Move days stored before tenants existed (`activities/date=...`) and their count-check files under
    `data`'s tenant. Each day moves by one rename, so a reader sees it in the old place or the new, whole.
    Safe to run again, and from several processes at once (they take turns).
    """
    import fcntl

    done = Adopted()
    if not legacy_days(data.root):
        return done
    (data.root / STAGING).mkdir(parents=True, exist_ok=True)
    with open(data.root / STAGING / "adopt-legacy-days.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for folder in legacy_days(data.root):
            day = dt.date.fromisoformat(folder.name.removeprefix("date="))
            target = data.day_dir(day)
            if target.exists():
                done.conflicts.append(day)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            folder.rename(target)
            done.days.append(day)
            health = data.root / HEALTH / f"{day.isoformat()}.json"
            if health.exists():
                data.health.mkdir(parents=True, exist_ok=True)
                health.rename(data.health / health.name)
    return done
