"""`python -m activity_pipeline.daemon_check` (`make daemon-check`): whether the daemon is running now, from its
heartbeats in the instance (DAGSTER_HOME): exit 0 when every daemon the instance needs beat within the last
`--within` seconds (default 120: four of its 30-second beats), else 1, naming each one and how long ago it last beat.

Dagster's own `dagster-daemon liveness-check` allows 30 minutes without a heartbeat before it says the daemon is
not live: it still says "Daemon live" for up to half an hour after the daemon died, while no schedule, sensor or
queued run moves. A supervisor's health check (systemd, a Kubernetes liveness probe) should ask this instead.
"""

from __future__ import annotations

import argparse
import sys
import time

import dagster as dg


def stale(instance: dg.DagsterInstance, within: float, now: float | None = None) -> dict[str, float | None]:
    """Each daemon the instance needs whose last heartbeat is older than `within` seconds: how many seconds ago it
    beat (None: never)."""
    now = time.time() if now is None else now
    beats = instance.get_daemon_heartbeats()
    found: dict[str, float | None] = {}
    for kind in instance.get_required_daemon_types():
        beat = beats.get(kind)
        if beat is None or now - beat.timestamp > within:
            found[kind] = None if beat is None else now - beat.timestamp
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m activity_pipeline.daemon_check")
    parser.add_argument("--within", type=float, default=120.0, help="seconds a heartbeat may be old (default 120)")
    args = parser.parse_args(argv)
    found = stale(dg.DagsterInstance.get(), args.within)
    if found:
        ages = [age for age in found.values() if age is not None]
        last = f"the last {min(ages):.0f} s ago" if ages else "none ever on this instance"
        print(f"the daemon is not running: {len(found)} of its parts sent no heartbeat within {args.within:.0f} s "
              f"({', '.join(found)}; {last}). Start it: make ui, or dagster-daemon run -w workspace.yaml",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"the daemon is running: each of its parts sent a heartbeat within {args.within:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
