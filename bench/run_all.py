"""`make bench`: run every benchmark in its own process and write bench/RESULTS.md.

Each benchmark runs in a fresh interpreter so that peak-RSS figures are its own. The figures are printed
as they come and collected, with the machine and the date, into RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

from bench.common import machine

BENCHMARKS: list[tuple[str, list[str], str]] = [
    ("Demo tenant cost (1,000,000-activity day)", ["bench.demo_tenant_cost"], ""),
    ("Scan memory (1,000,000-activity day, pages discarded)", ["bench.scan", "memory"], ""),
    (
        "Scan latency and request efficiency (200,000 activities, 300 ms per page, no rate limit)",
        ["bench.scan", "slices", "--rounds", "5"],
        "The demo tenant serves from 8 processes here, one per concurrent page at most, as the real service "
        "serves pages in parallel; on 2 cores the client and the server still share the CPU. An idle worker "
        "takes the back half of what the busiest slice has left after the page it is already fetching, judged "
        "by the density of that slice's latest page. At most 4 pages are in flight, so 8 slices run on 4 threads "
        "and measure as 4 do.",
    ),
    (
        "Scan at the service's rate limit (200,000 activities, 300 ms per page, 30 requests a minute)",
        ["bench.scan", "rate-limited"],
        "One run per slice count: each takes over a minute, by design of the limit.",
    ),
    (
        "Ingest throughput (200,000 activities): the activities asset vs the seed loop, same server",
        ["bench.ingest", "throughput", "--rounds", "5"],
        "Records a second of the asset come from its own timing (scan start to the day swapped in); Dagster's "
        "run start-up is shown beside it. The seed loop only collects records into a list. The asset keeps both "
        "cores busy (its own decoding and writing, the demo tenant's rendering) where the seed loop uses one, "
        "so this ratio moves with the CPU the machine grants more than the seed loop's figure does: on this "
        "machine the same code has measured from 3.1x to 3.8x (medians of 3 or 5 runs).",
    ),
    (
        "Ingest memory (1,000,000 activities): peak RSS, the activities asset vs the seed loop",
        ["bench.ingest", "memory", "--rounds", "1"],
        "Peak RSS is the whole materializing process: Python, Dagster and pyarrow take about 125 MiB before the "
        "scan starts. Targets are in MB (10^6 bytes): 400 MB is 381 MiB. One run each: the seed loop needs "
        "about two minutes and 11 GB. Across runs on this machine the asset's peak measured 333-342 MiB before "
        "the scan's threads were capped at the pages in flight (4), 308 MiB since.",
    ),
    (
        "The whole daily run, headless (200,000 activities, no rate limit): make run vs the seed loop",
        ["bench.ingest", "run", "--rounds", "3"],
        "The run is `make run`'s command for one tenant (`python -m activity_pipeline.launch "
        "default_daily_activities DAY`): Python and "
        "Dagster start-up, the scan, the ten checks in one step, the DuckDB views, all in one process (the "
        "in-process executor). It is timed from the command's start to the run's end (RUN_SUCCESS, after the "
        "last check and the views), as the target reads; the command exits about 2 s later, Python unloading "
        "the modules Dagster loaded, and that figure is shown beside it. "
        "The seed loop only collects the day's records into a list. Both sides alternate on one demo tenant.",
    ),
    (
        "The whole daily run's memory (1,000,000 activities): peak RSS of the run process",
        ["bench.ingest", "run-memory"],
        "Scan, checks and views in one process: the checks' DuckDB query is capped (memory_limit, spilling to "
        "disk) so that it stays under what the scan already needed.",
    ),
    (
        "Late arrivals (1,000,000 activities, clock 720x real time): top-ups by created vs full re-scans",
        ["bench.late"],
        "The demo tenant serves yesterday with its clock starting at 02:15 the next day and running 720 times "
        "faster than real time (a simulated day every two minutes), so late records arrive during the scans too. "
        "Each simulated night at 02:15 one data directory is topped up and another re-scanned in full; both "
        "then get the count check's verdict as of their watermark. No rate limit: at the service's 30 requests "
        "a minute the seconds would follow the requests.",
    ),
    (
        "Many tenants (20 demo tenants, one 50,000-activity day each, no rate limit): runs launched at once",
        ["bench.tenants"],
        "Each tenant is a demo tenant in its own process with its own data and token, listed in one tenants file "
        "with `api_url` and `token_env` as real tenants are. The 20 daily jobs start at once, each as `make run` "
        "starts one (`dg launch`: scan, checks and views in one run process), into one instance and one dataset; "
        "each run's peak RSS and CPU come from wait4 on its process. The last line turns the CPU a record cost "
        "(start-up included) and the largest run into how many tenants this machine keeps scanning at the "
        "service's 30 requests a minute (2,500 records a second each, at 5,000 a page).",
    ),
    (
        "A 10,000,000-activity day: memory and time against a 1,000,000-activity day",
        ["bench.ingest", "scale"],
        "The `activities` asset alone, each size in a fresh process, the demo tenant serving from 2 processes with "
        "no rate limit. What is held to drop duplicates is a slice's recent pages (`ids held`); at most 4 pages "
        "are in flight whatever the slices (`Scanner(pages_in_flight=4)`). Time per record is compared, so a "
        "larger day may be faster per record (fewer fixed costs a record), never slower by more than noise.",
    ),
    (
        "The whole daily run at 10,000,000 activities (scan, ten checks, views): peak RSS of the run process",
        ["bench.ingest", "run-memory", "--activities", "10000000"],
        "The daily job as `make run` runs it (`python -m activity_pipeline.launch`: scan, the ten checks, the "
        "DuckDB views, one process), "
        "the demo tenant serving from 2 processes with no rate limit. The checks' DuckDB queries are capped at "
        "64 MB and spill to disk; duplicates are counted by a GROUP BY, which spills, not count(DISTINCT), "
        "which ran out of the cap at this size.",
    ),
    (
        "Daily cost with history: the daily run, scan aside, with 180 stored days against 3",
        ["bench.history"],
        "Both data directories hold days of 2,000 activities; the run is the whole daily job in this process "
        "(scan, ten checks, views), alternating, and what is compared is its time less the scan's own.",
    ),
    (
        "A 10-day backfill through the daemon at the service's rate (30 requests a minute)",
        ["bench.backfill"],
        "The demo tenant allows 30 requests in any 60 seconds, as the service does, and the tenant's client is "
        "set to match; the backfill is `dagster job backfill` of the tenant's daily job, run by `dagster-daemon` "
        "under the shipped local instance. Not scaled in time, so it takes about 9 minutes: scaled to 30 "
        "requests in 20 s (`--window 20`) the same backfill measured 0.94 over the API time and 0.85 over the "
        "wall time, the daemon's and first run's start-up (about 18 s) not shrinking with the window.",
    ),
    (
        "The dataset on object storage (a Delta table on moto's S3 server): throughput and memory",
        ["bench.lake"],
        "Each day is staged as local Parquet by the same writer as the local path, uploaded, and committed to the "
        "Delta table in one commit. moto's server runs on this machine and shares its two cores with the demo "
        "tenant and the asset: the upload's CPU is counted here, where a real bucket would cost network time.",
    ),
    (
        "The lake's layout: queries over 90 and 180 days of 1,000,000 activities, compacted against DuckDB's own",
        ["bench.lake_queries", "queries"],
        "One day is scanned as the pipeline stores it, compacted, and rewritten by DuckDB itself (ORDER BY "
        "timestamp, 122,880-row groups, zstd); each layout is then the same day under 90 (then 180) days' folders "
        "by hard links, so the disk and the page cache hold one copy and what differs is the layout alone. The "
        "queries run alternating, each layout in turn, the median of 2, results fetched as Arrow; the layout as "
        "scanned is timed at 90 days only. 'One user' and 'one IP' look up a typical one (the median of the "
        "day's users or addresses by activities), as an investigation does, and fetch its whole rows. 'The last two "
        "hours' are the newest day's (a `date` and a `timestamp` bound, as an investigation writes it). The "
        "compacted day without its Bloom filters (on user_name and ip_address) shows what they pay in the two "
        "lookups.",
    ),
    (
        "Compaction of a 10,000,000-activity day: time and peak RSS",
        ["bench.lake_queries", "compaction"],
        "The day is scanned, the demo tenant stopped, then compacted as the compaction job does it: the rewrite "
        "and its verification in a worker process of their own.",
    ),
    (
        "Upgrade of a 1,000,000-activity day from schema version 1: time and peak RSS, against compacting it",
        ["bench.lake_queries", "upgrade"],
        "The day is scanned by today's writer and copied; the copy's files are rewritten with version 1's columns "
        "only (as the writer of version 1 left them, its manifest saying so). Then, each in a fresh process, the day "
        "is compacted as the compaction job does it and the copy is upgraded (`make upgrade`: the same compaction, "
        "each typed column derived again from `raw`, verified that every id and raw are unchanged). The speed target "
        "is missed: an upgrade is the compaction plus decoding every record's JSON (about 4 KB each here) into the "
        "typed columns in Python, ~13 us a record, which the compaction of a current day does not do; it runs in "
        "the compaction's worker, one core, as the compaction's own work does. It is done once per day and release "
        "of the columns, within the memory target.",
    ),
    (
        "Verification: make verify's reading of 90 days of 1,000,000 activities, against DuckDB reading them once",
        ["bench.verify"],
        "One day is scanned as the pipeline stores it and laid out as 90 days by hard links (each day its own "
        "manifest), so both sides read from the page cache and what differs is the work: verification hashes each "
        "file (SHA-256, beside the decoding) and decodes every column with DuckDB, one file at a time in a session "
        "capped at 64 MB; DuckDB reads every column once (the max of each, the length of raw) over all the days in "
        "one query, best of 2. Each side is a fresh process; its peak RSS is its own. The speed target is missed: "
        "verification does DuckDB's whole read of every file and hashes its bytes besides (22.9 GB at 1.6 GB/s on "
        "this machine), so it cannot be faster than the read it contains; the decode is what proves the files "
        "still read, and is kept. It went from 2.85x (pyarrow, one row group at a time) to 1.15x this session.",
    ),
    (
        "DuckDB over 30 days of 50,000 activities: pruning, and Parquet size against JSON",
        ["bench.duckdb_queries"],
        "",
    ),
    (
        "Hundreds of tenants: the code location's load, a run's start-up and make tenants at 1 to 1,000 tenants",
        ["bench.many_tenants"],
        "Each figure from a fresh interpreter, as the code server, the daemon and every run worker start one; the "
        "tenants are real tenants in one tenants file (the one a run starts for, a demo tenant). Load is import, "
        "build and every job resolved (what the code server does before the UI can use it); the jobs counted include "
        "Dagster's own `__ASSET_JOB`. Before this shape "
        "(a tenant was an asset, a job, a schedule and three sensors) the same measure gave 4.3 s and 136 MB at 1 "
        "tenant, 31.5 s and 436 MB at 300, 331 s and 3,214 MB at 1,000 (2026-12-04).",
    ),
    (
        "A night of many tenants: 300 demo tenants of 1,000 activities, yesterday of each, through the daemon",
        ["bench.night"],
        "The runs the 02:15 schedule asks for (one per tenant), submitted as a backfill of those partitions, queued "
        "and launched by dagster-daemon under the shipped local instance (4 runs at once, one per tenant at a time), "
        "a process per run. The CPU is the machine's, from /proc/stat, so the machine must be otherwise idle. What "
        "limits it is CPU, not the tenants' APIs: the two cores are busy throughout, and a run spends more on starting "
        "(a Python process, Dagster, the code location: about 3 s from launch to its first step) than on its "
        "1,000 activities; at the service's 30 requests a minute such a day needs a handful of requests. A "
        "deployment of 300 such tenants needs about 25 CPU-minutes a night on this machine; larger days add their "
        "scan's time (bench.ingest).",
    ),
]


BENCHMARKS += [
    (
        "Intraday: the lag from an activity's creation to the DuckDB file (one tenant in real time, 15 minutes)",
        ["bench.intraday", "lag"],
        "An hour of the daemon as `make ui` runs it. A record waits for the next interval (15 minutes at most, 7.5 "
        "on average), then for the run (seconds): the p50 sits near half the interval and the p95 a little under "
        "the whole.",
    ),
    (
        "Intraday: what a day costs collected every 15 minutes against once at 02:15 (100,000 activities)",
        ["bench.intraday", "day"],
        "The tenant's clock is moved, not waited for: the requests and commits are those of a real day, the "
        "seconds are the runs' own (in-process, no daemon).",
    ),
    (
        "Intraday: 300 tenants at 15 minutes through the daemon (CPU)",
        ["bench.intraday", "cpu"],
        "The CPU is the daemon's process tree (the daemon, its code server, every run), so other work on the "
        "machine does not count in it.",
    ),
]


def _sections(text: str) -> dict[str, str]:
    """The sections of an existing RESULTS.md, by title; those written before sections were dated get the
    date the whole file was written."""
    written = re.search(r"Written by `make bench` on ([0-9-]+ [0-9:]+ UTC)", text)
    found = {}
    for chunk in text.split("\n## ")[1:]:
        title = chunk.split("\n", 1)[0].strip()
        section = "## " + chunk.rstrip() + "\n"
        if written and "` (run " not in section:
            section = re.sub(r"(\n`python -m [^`]+`)\n", rf"\1 (run {written.group(1)})\n", section, count=1)
        found[title] = section
    return found


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument(
        "--only", nargs="*", metavar="COMMAND",
        help="run only these (a module, or a module and its argument: 'bench.lake', 'bench.ingest scale'); the "
        "other sections stay as they were",
    )  # fmt: skip
    a = p.parse_args()
    results = Path(__file__).with_name("RESULTS.md")
    kept = _sections(results.read_text()) if a.only and results.exists() else {}
    sections = []
    failed = 0
    for title, module, note in BENCHMARKS:
        if a.only and module[0] not in a.only and " ".join(module[:2]) not in a.only:
            sections.append(kept.get(title) or f"## {title}\n\n`python -m {' '.join(module)}`: not run since its title "
                            "changed; `make bench` runs it.\n")  # fmt: skip
            continue
        print(f"== {title}", flush=True)
        proc = subprocess.run([sys.executable, "-m", *module], capture_output=True, text=True)
        out = proc.stdout.strip()
        print(out, flush=True)
        if proc.returncode:
            failed += 1
            out += f"\n(exit {proc.returncode})\n{proc.stderr.strip()[-2000:]}"
        when = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
        sections.append(
            f"## {title}\n\n`python -m {' '.join(module)}` (run {when})\n\n```\n{out}\n```\n"
            + (f"\n{note}\n" if note else "")
        )
    results.write_text(
        "# Benchmark results\n\n"
        f"Written by `make bench` (`python -m bench.run_all`); each section says when it ran, and the two sides of "
        f"every ratio ran in that same run. Last written {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.\n\n"
        f"Machine: {machine()}.\n\n"
        "Targets that a figure misses are said so below each section, never tuned away.\n\n" + "\n".join(sections)
    )
    print(f"wrote {results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
