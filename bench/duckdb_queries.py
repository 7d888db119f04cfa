"""DuckDB over 30 days of 50,000 activities (issue 6): partition pruning, and Parquet size against JSON.

- A one-day aggregate against the same aggregate over all days, median of several runs each.
  Target: pruning makes the one-day query at least 10 times cheaper.
- Parquet bytes on disk against the JSON bytes the API sent for the same records. Target: at most 1/8.

Run: .venv/bin/python -m bench.duckdb_queries [--days 30] [--activities 50000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from activity_pipeline.ingest import ingest_day
from activity_pipeline.mdca import MdcaClient, MdcaSettings, RateLimiter
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline.storage.duckdb_views import build_database
from activity_pipeline.storage.local import LocalStore
from bench.common import TOKEN, demo_tenant_process


def _median_seconds(con: duckdb.DuckDBPyConnection, sql: str, params: list, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        con.execute(sql, params).fetchall()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--activities", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    today = dt.datetime.now(dt.UTC).date()
    days = [today - dt.timedelta(days=k) for k in range(a.days, 0, -1)]
    with demo_tenant_process(a.activities, days=a.days) as url, tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        settings = MdcaSettings(api_url=url, api_token=TOKEN, requests_per_minute=0)
        json_bytes = parquet_bytes = rows = 0
        t0 = time.perf_counter()
        for day in days:
            client = MdcaClient(settings, limiter=RateLimiter(0))
            result = ingest_day(client, LocalStore(data, "bench"), day)
            json_bytes += result.bytes_received
            parquet_bytes += result.bytes_written
            rows += result.rows
        ingest = time.perf_counter() - t0
        path = build_database(open_dataset(data)).path
        with duckdb.connect(str(path), read_only=True) as con:
            query = "SELECT app_name, count(*), count(DISTINCT user_name) FROM activities {} GROUP BY 1"
            one = _median_seconds(con, query.format("WHERE date = ?"), [days[len(days) // 2]], a.rounds)
            every = _median_seconds(con, query.format(""), [], a.rounds)
    print(f"duckdb: {rows:,} activities over {len(days)} days ingested in {ingest:.0f}s ({rows / ingest:,.0f}/s)")
    print(
        f"duckdb: one-day aggregate median {one * 1000:.1f} ms, all-days aggregate median {every * 1000:.1f} ms "
        f"({a.rounds} runs each): pruning makes the one-day query {every / one:.1f}x cheaper; target at least 10x: "
        f"{'met' if every / one >= 10 else 'MISSED'}"
    )
    verdict = "met" if parquet_bytes * 8 <= json_bytes else "MISSED"
    print(
        f"duckdb: Parquet {parquet_bytes / 2**20:,.0f} MiB vs {json_bytes / 2**20:,.0f} MiB of JSON as received: "
        f"1/{json_bytes / parquet_bytes:.1f}; target at most 1/8: {verdict}"
    )


if __name__ == "__main__":
    main()
