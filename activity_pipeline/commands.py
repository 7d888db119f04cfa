"""What the commands over stored days (`make verify`, `make upgrade`) share: `[DAY=] [TENANT=]` read and checked."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt

from activity_pipeline.config import PipelineConfig, TenantConfig


@dataclasses.dataclass(frozen=True)
class DaysAsked:
    config: PipelineConfig
    tenants: list[TenantConfig]
    # None: every stored day.
    days: list[dt.date] | None


def days_asked(prog: str, description: str, argv: list[str]) -> DaysAsked:
    """The configuration, the tenants (one, or every configured one) and the day (one, or None for every stored
    day) a command was asked for. A mistake is said on stderr and exits 2 (SystemExit), before anything is read."""
    from activity_pipeline import config as configuration
    from activity_pipeline.errors import ConfigError

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--day", help="one day, YYYY-MM-DD (default: every stored day)")
    parser.add_argument("--tenant", help="one tenant (default: every configured tenant)")
    args = parser.parse_args(argv)
    try:
        cfg = configuration.load()
        tenants = [cfg.tenant(args.tenant)] if args.tenant else list(cfg.tenants)
    except (ConfigError, KeyError) as exc:
        parser.exit(2, f"{prog}: {exc}\n")
    days = None
    if args.day:
        try:
            days = [dt.date.fromisoformat(args.day)]
        except ValueError:
            parser.exit(2, f"{prog}: DAY={args.day} is not a day: write it as YYYY-MM-DD, e.g. 2026-11-24\n")
    return DaysAsked(cfg, tenants, days)
