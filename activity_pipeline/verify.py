"""Read stored days again and say which are damaged and how to mend each: `make verify [DAY=] [TENANT=]`.

Every file of every day named (all stored days of every tenant by default) is read again whole: its bytes
against the digest its manifest recorded when it was written, every column decoded (Parquet's page checksums
checked), its rows counted (`storage.integrity`). What was found is kept beside the dataset, where the
`stored_files_intact` check and the weekly `activities_verification` job read it. Exit status 0 only when
every day named is intact.

    python -m activity_pipeline.verify [--day 2026-11-24] [--tenant contoso]
    contoso 2026-11-24: intact (3 files, 19,926 rows, 4.9 MB, 0.2 s)
    contoso 2026-11-25: DAMAGED: part-000000000.parquet: its bytes changed since it was written (SHA-256 differs).
      Repair: ... make run DAY=2026-11-25 TENANT=contoso FULL_RESCAN=1 ...
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterable

from activity_pipeline.config import TenantConfig
from activity_pipeline.service_window import SERVICE_WINDOW_DAYS, first_scannable_day
from activity_pipeline.storage.core import TenantStore
from activity_pipeline.storage.integrity import Verification

# The weekly job reads again each day whose last verification is older than this (or of another version), so a
# week's work is about a quarter of the archive and every day is read at least this often.
VERIFY_EVERY_DAYS = 28


def repair(tenant: TenantConfig, day: dt.date, today: dt.date) -> str:
    """How to mend a damaged `day` of `tenant`, as of `today`: a full re-scan while the service still holds the
    day, else the copy `keep_days.copied_to` names, else nothing can."""
    oldest = first_scannable_day(today)
    if tenant.uses_demo_tenant or day >= oldest:
        left = "" if tenant.uses_demo_tenant else f" ({(day - oldest).days} days before the service drops it)"
        return (
            f"the service still holds {day}{left}: scan it anew with "
            f"make run DAY={day} TENANT={tenant.name} FULL_RESCAN=1 (a run tagged activity_pipeline/full_rescan=true "
            "from the UI does the same)"
        )
    if tenant.keep_copied_to:
        return (
            f"the service dropped {day} around {day + dt.timedelta(days=SERVICE_WINDOW_DAYS)}; restore it from the "
            f"copy at {tenant.keep_copied_to} (keep_days.copied_to: the same layout, tenant={tenant.name}/date={day}), "
            f"then run make verify DAY={day} TENANT={tenant.name} again"
        )
    return (
        f"the day cannot be repaired: the service no longer holds {day} (it keeps {SERVICE_WINDOW_DAYS} days) and no "
        "copy is configured (keep_days.copied_to). Keep the damaged files for whatever they still hold; their raw "
        "records may be partly readable"
    )


def due(store: TenantStore, days: Iterable[dt.date], now: dt.datetime, every_days: int = VERIFY_EVERY_DAYS) -> list:
    """Of `days` (stored), those whose last verification is older than `every_days`, of another version, or
    damaged: the oldest-verified first (never-verified first of all), so an interrupted job resumes with what it
    had not reached."""
    last = store.verifications()
    horizon = now - dt.timedelta(days=every_days)
    manifests = {d: store.manifest(d) for d in days}

    def stale(day: dt.date) -> bool:
        v, m = last.get(day), manifests[day]
        if m is None:
            return False
        return v is None or not v.intact or v.version != m.run_id or dt.datetime.fromisoformat(v.verified_at) < horizon

    def order(day: dt.date) -> tuple[str, dt.date]:
        v = last.get(day)
        return (v.verified_at if v is not None else "", day)

    return sorted((d for d in manifests if stale(d)), key=order)


def describe(v: Verification) -> str:
    """One line for a verified day."""
    size = f"{v.bytes / 1e6:,.1f} MB"
    what = f"{v.files} files, {v.rows:,} rows, {size}, {v.seconds:.1f} s"
    if v.undigested:
        what += f"; {v.undigested} written before digests existed: decoded and JSON-checked only"
    if v.intact:
        return f"{v.tenant} {v.day}: intact ({what})"
    return f"{v.tenant} {v.day}: DAMAGED ({what}): " + "; ".join(v.problems)


def verify_days(
    store_of: Callable[[str], TenantStore],
    tenants: Iterable[TenantConfig],
    days: Iterable[dt.date] | None,
    *,
    now: dt.datetime,
    report: Callable[[str], None],
    only_due: bool = False,
    on_verified: Callable[[TenantConfig, Verification, str | None], None] | None = None,
) -> list[tuple[TenantConfig, Verification, str | None]]:
    """Verify the `days` of each tenant (None: every stored day; `only_due`: those `due`), reporting a line each
    as it goes; returns (tenant, verification, repair or None) for each day verified."""
    done = []
    for tenant in tenants:
        store = store_of(tenant.name)
        stored = store.days()
        present = set(stored)
        wanted = stored if days is None else [d for d in days if d in present]
        if days is not None:
            for missing in sorted(set(days) - present):
                report(f"{tenant.name} {missing}: not stored, nothing to verify")
        if only_due:
            wanted = due(store, wanted, now)
        for day in wanted:
            verification = store.verify_day(day)
            if verification is None:
                continue
            fix = None if verification.intact else repair(tenant, day, now.date())
            report(describe(verification) + (f"\n  Repair: {fix}" if fix else ""))
            if on_verified is not None:
                on_verified(tenant, verification, fix)
            done.append((tenant, verification, fix))
    return done


def main(argv: list[str]) -> int:
    from activity_pipeline.commands import days_asked
    from activity_pipeline.storage.dataset import open_dataset

    asked = days_asked("make verify", __doc__.splitlines()[0], argv)
    cfg, tenants, days = asked.config, asked.tenants, asked.days
    dataset = open_dataset(cfg.data_dir, cfg.data_url)
    now = dt.datetime.now(dt.UTC)
    done = verify_days(dataset.tenant, tenants, days, now=now, report=print)
    damaged = [(t.name, v.day) for t, v, _ in done if not v.intact]
    rows = sum(v.rows for _, v, _ in done)
    print(f"verified {len(done)} days ({rows:,} rows) of {len(tenants)} tenants in {dataset.location}: ", end="")
    if damaged:
        print(f"{len(damaged)} DAMAGED: " + ", ".join(f"{t} {d}" for t, d in damaged))
        return 1
    print("every one intact" if done else "nothing stored to verify")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
