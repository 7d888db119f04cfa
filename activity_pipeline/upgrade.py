"""Derive the typed columns of stored days again from their own `raw`: `make upgrade [DAY=] [TENANT=]`.

Each stored day records the version of the typed columns it was written with (`Manifest.schema_version`). A day
of an older version is rewritten from its `raw` by the compaction (`storage.compaction`): under the day's lock,
verified (the same rows, every `id` and `raw` unchanged) before it is swapped in, one step, on disk and on object
storage alike. Never from the API: days the service dropped long ago are upgraded the same way. The compaction
sensor does this for settled days on its own; this command does every day named now. Exit status 0 when every
day named is current, 1 when one could not be upgraded (it is unchanged and still reads as before), 2 for a bad
argument.

    python -m activity_pipeline.upgrade [--day 2026-11-24] [--tenant contoso]
    contoso 2026-11-24: upgraded from version 1 to 2 (19,926 rows, 2.1 s)
    contoso 2026-11-25: current (version 2)
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterable

from activity_pipeline import privacy
from activity_pipeline.storage.compaction import CompactionError, NotStoredError, compact_day
from activity_pipeline.storage.core import TenantStore
from activity_pipeline.storage.errors import DayChangedError, DayLockedError
from activity_pipeline.storage.schema import SCHEMA_VERSION


def upgrade_days(
    store: TenantStore, days: Iterable[dt.date] | None, *, report: Callable[[str], None]
) -> tuple[list[dt.date], list[dt.date]]:
    """Upgrade each of `days` (None: every stored day) of `store` written with older typed columns; returns (the
    days upgraded, the days that failed). A day already current is left as it is."""
    stored = store.days()
    present = set(stored)
    wanted = stored if days is None else [d for d in days if d in present]
    for missing in sorted(set(days or ()) - present):
        report(f"{store.tenant} {missing}: not stored, nothing to upgrade")
    upgraded, failed = [], []
    for day in wanted:
        manifest = store.manifest(day)
        if manifest is None:
            continue
        if manifest.schema_version >= SCHEMA_VERSION:
            report(f"{store.tenant} {day}: current (version {manifest.schema_version})")
            continue
        try:
            done = compact_day(store, day)
        except NotStoredError:
            continue
        except (DayLockedError, DayChangedError, CompactionError) as exc:
            report(f"{store.tenant} {day}: NOT UPGRADED: {exc}")
            failed.append(day)
            continue
        report(
            f"{store.tenant} {day}: upgraded from version {manifest.schema_version} to {SCHEMA_VERSION} "
            f"({done.after.rows:,} rows, {done.seconds:.1f} s)"
        )
        upgraded.append(day)
    return upgraded, failed


def main(argv: list[str]) -> int:
    from activity_pipeline.commands import days_asked
    from activity_pipeline.storage.dataset import open_dataset

    asked = days_asked("make upgrade", __doc__.splitlines()[0], argv)
    cfg, tenants, days = asked.config, asked.tenants, asked.days
    dataset = open_dataset(cfg.data_dir, cfg.data_url)
    upgraded, failed = 0, []
    for tenant in tenants:
        done, bad = upgrade_days(dataset.tenant(tenant.name), days, report=print)
        upgraded += len(done)
        failed += [f"{tenant.name} {d}" for d in bad]
    where = f"{len(tenants)} tenants in {dataset.location}"
    print(f"upgraded {upgraded} days of {where} to version {SCHEMA_VERSION}", end="")
    if failed:
        print(f"; {len(failed)} NOT UPGRADED (unchanged; run make upgrade again): " + ", ".join(failed))
        return 1
    print("; every day named is current")
    # Datasets written before files were private: closed to the setting now (privacy.py).
    if cfg.data_dir.is_dir():
        changed = privacy.tighten(cfg.data_dir, cfg.data_group)
        who = f"its owner and group {cfg.data_group}" if cfg.data_group else "its owner only"
        print(f"{cfg.data_dir}: {changed} paths tightened; every path is readable by {who}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
