"""Move days stored before tenants existed under one tenant: `python -m activity_pipeline.migrate NAME`.

Up to version 0.2 a dataset held one tenant, as `activities/date=YYYY-MM-DD/`; now each tenant has
`activities/tenant=<name>/date=YYYY-MM-DD/`. With a single tenant configured (no ACTIVITY_TENANTS_FILE),
its runs do this by themselves; with a tenants file, name the tenant the old days belong to.
"""

from __future__ import annotations

import argparse
import sys

from activity_pipeline import config
from activity_pipeline.storage.layout import TenantPaths, adopt_legacy_days, legacy_days


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m activity_pipeline.migrate", description=__doc__.split("\n")[0])
    parser.add_argument("tenant", help="the tenant the days stored without one belong to, as named in the tenants file")
    args = parser.parse_args(argv)
    settings = config.load()
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
