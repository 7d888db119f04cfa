"""Move a deployment onto this version's shape.

`python -m activity_pipeline.migrate NAME`: move days stored before tenants existed under one tenant. Up to
version 0.2 a dataset held one tenant, as `activities/date=YYYY-MM-DD/`; now each tenant has
`activities/tenant=<name>/date=YYYY-MM-DD/`. With a single tenant configured (no ACTIVITY_TENANTS_FILE), its runs
do this by themselves; with a tenants file, name the tenant the old days belong to.

`python -m activity_pipeline.migrate --record-stored-days`: tell the Dagster instance (DAGSTER_HOME) which days
are stored. Since every tenant's days became partitions (`DAY|TENANT`) of one asset, `activities`, the
materializations an instance holds are of the old per-tenant assets; this reports each stored day the instance
does not know as materialized (a runless event, `migrated: true`), so the UI's grid shows what is stored. It reads
only the dataset's listing, and can be run again (a day already known is left alone).
"""

from __future__ import annotations

import argparse
import sys

from activity_pipeline import config
from activity_pipeline.storage.layout import TenantPaths, adopt_legacy_days, legacy_days


def record_stored_days(settings: config.PipelineConfig) -> int:
    """Report every stored day the instance does not know as a materialization of its partition; how many."""
    import dagster as dg

    from activity_pipeline.components.partitions import key
    from activity_pipeline.storage.dataset import open_dataset

    dataset = open_dataset(settings.data_dir, settings.data_url)
    asset = dg.AssetKey("activities")
    reported = 0
    with dg.DagsterInstance.get() as instance:
        known = set(instance.get_materialized_partitions(asset))
        for tenant in settings.tenants:
            for day, rows in sorted(dataset.tenant(tenant.name).day_rows().items()):
                partition = str(key(day, tenant.name))
                if partition in known:
                    continue
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(
                        asset_key=asset,
                        partition=partition,
                        description="stored before the upgrade to one asset for every tenant",
                        metadata={"dagster/partition_row_count": rows, "migrated": True},
                    )
                )
                reported += 1
    return reported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m activity_pipeline.migrate", description=__doc__.split("\n")[2])
    parser.add_argument(
        "tenant", nargs="?", help="the tenant the days stored without one belong to, as named in the tenants file"
    )
    parser.add_argument(
        "--record-stored-days", action="store_true", help="report the stored days to the instance in DAGSTER_HOME"
    )
    args = parser.parse_args(argv)
    settings = config.load()
    if args.record_stored_days:
        print(f"reported {record_stored_days(settings):,} stored days to the instance as materialized")
        return 0
    if args.tenant is None:
        parser.error("name the tenant the old days belong to, or --record-stored-days")
    names = [t.name for t in settings.tenants]
    if args.tenant not in names:
        print(f"{args.tenant!r} is not a configured tenant; configured: {', '.join(names)}", file=sys.stderr)
        return 2
    if not legacy_days(settings.data_dir):
        print(f"nothing to move: {settings.data_dir}/activities holds no date=YYYY-MM-DD folder")
        return 0
    done = adopt_legacy_days(TenantPaths(settings.data_dir, args.tenant))
    print(f"moved {len(done.days)} days under activities/tenant={args.tenant}/")
    if done.conflicts:
        days = ", ".join(map(str, done.conflicts))
        print(f"left in place, because tenant {args.tenant} already has them: {days}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
