"""python -m activity_pipeline.demo_tenant: serve a demo tenant until interrupted."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import json
import logging
import os
import signal
import sys
import time

from activity_pipeline.demo_tenant import DEMO_TOKEN, FAULT_KINDS, DemoTenant, DemoTenantServer, Outage, ServerSettings
from activity_pipeline.demo_tenant.data import TenantSpec


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date in YYYY-MM-DD form: {text!r}") from exc


def _outage(text: str) -> Outage:
    """app=20893, hour=14, or app=20893:hour=14, optionally with :day=YYYY-MM-DD."""
    fields: dict[str, object] = {}
    for part in text.split(":"):
        key, _, value = part.partition("=")
        try:
            if key == "app":
                fields["app_id"] = int(value)
            elif key == "hour":
                fields["hour"] = int(value)
            elif key == "day":
                fields["day"] = dt.date.fromisoformat(value)
            else:
                raise ValueError(f"unknown key {key!r}")
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"bad --outage {text!r} ({exc}); use app=ID, hour=H, or both joined by ':', plus :day=YYYY-MM-DD"
            ) from exc
    try:
        return Outage(**fields)  # type: ignore[arg-type]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m activity_pipeline.demo_tenant",
        description="Serve a synthetic Defender for Cloud Apps tenant's Activities API on 127.0.0.1.",
    )
    p.add_argument("--port", type=int, default=8765, help="TCP port on 127.0.0.1 (0 picks a free one)")
    p.add_argument("--token", default=DEMO_TOKEN, help="accepted as 'Token <t>' or 'Bearer <t>'")
    p.add_argument("--days", type=int, default=7, help="serve the last N complete UTC days")
    p.add_argument("--activities-per-day", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--requests-per-minute", type=int, default=30, help="0 turns throttling off")
    p.add_argument("--window-seconds", type=float, default=60.0, help="the throttle's rolling window")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0, help=f"share of responses that fail: {FAULT_KINDS}")
    p.add_argument("--no-retry-after", action="store_true", help="answer 429 without a Retry-After header")
    p.add_argument("--stress-day", type=_day, action="append", default=[], help="add a tie of --stress-tie records")
    p.add_argument("--stress-tie", type=int, default=6_000)
    p.add_argument("--outage", type=_outage, action="append", default=[], help="app=ID and/or hour=H[:day=D]")
    p.add_argument("--now", help="pin the tenant's clock (ISO 8601, UTC); default: the real time")
    p.add_argument(
        "--clock-speed",
        type=float,
        default=0.0,
        help="with --now: the tenant's clock starts there and runs this many times faster than real time, "
        "so late records keep arriving (benchmarks of top-ups)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="serve from N forked processes sharing the socket, so rendering is not held to one core "
        "(benchmarks); throttling state is per process, so N > 1 needs --requests-per-minute 0",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        spec = TenantSpec.last_complete_days(
            args.days,
            activities_per_day=args.activities_per_day,
            seed=args.seed,
            stress_days=frozenset(args.stress_day),
            stress_tie=args.stress_tie,
            outages=tuple(args.outage),
        )
        settings = ServerSettings(
            tokens=(args.token,),
            requests_per_minute=args.requests_per_minute,
            window_seconds=args.window_seconds,
            retry_after=not args.no_retry_after,
            latency_ms=args.latency_ms,
            fault_rate=args.fault_rate,
        )
        if args.processes < 1:
            raise ValueError(f"--processes must be at least 1, got {args.processes}")
        if args.processes > 1 and args.requests_per_minute:
            raise ValueError(
                "--processes > 1 keeps a throttle per process, which would multiply the rate limit; "
                "use it with --requests-per-minute 0"
            )
        if args.clock_speed < 0 or (args.clock_speed and not args.now):
            raise ValueError("--clock-speed needs --now (where the clock starts) and must not be negative")
        now = dt.datetime.fromisoformat(args.now.replace("Z", "+00:00")).astimezone(dt.UTC) if args.now else None
        clock = None
        if now is not None and args.clock_speed:
            # Wall time, not monotonic: forked serving processes must agree on the tenant's time.
            base, t0, speed = now.timestamp() * 1000, time.time(), args.clock_speed
            clock = lambda: int(base + (time.time() - t0) * 1000 * speed)  # noqa: E731
        tenant = DemoTenant(spec, now=clock)
        if now is not None and clock is None:
            tenant.set_now(now)
        server = DemoTenantServer(tenant, settings, port=args.port)
    except (ValueError, OSError) as exc:
        print(f"demo tenant: {exc}", file=sys.stderr)
        return 2
    days = f"{spec.days[0]} to {spec.days[-1]}"
    print(f"demo tenant serving {len(tenant.cols)} synthetic activities ({days}) at {server.url}", flush=True)
    print(f"  export MDCA_API_URL={server.url} MDCA_API_TOKEN=<the --token you passed>", flush=True)
    children = [_fork_server(server) for _ in range(args.processes - 1)]
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        server.stop()
        # What this process served, for benchmarks that count a tenant's requests (one line of JSON).
        stats = server.stats
        span = stats.admitted[-1] - stats.admitted[0] if len(stats.admitted) > 1 else 0.0
        figures = {"requests": stats.requests, "admitted": len(stats.admitted), "throttled": stats.throttled,
                   "admitted_span_seconds": round(span, 3)}  # fmt: skip
        print(f"demo tenant stats: {json.dumps(figures)}", flush=True)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _fork_server(server: DemoTenantServer) -> int:
    """A child process accepting on the same listening socket; it dies with its parent."""
    pid = os.fork()
    if pid:
        return pid
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        server.serve_forever()
    finally:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
