"""Shared test doubles and helpers: the test tenants' constants, misbehaving servers, clients pointed at the
demo tenant, and the project's real definitions run with test resources. Tests import from here only."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import requests

from activity_pipeline.components.partitions import key
from activity_pipeline.components.resources import MDCA, ActivityStorage, MdcaResource, TenantClients
from activity_pipeline.definitions import build_defs
from activity_pipeline.demo_tenant import DemoTenant, DemoTenantServer, ServerSettings
from activity_pipeline.demo_tenant.data import DAY_MS, day_start_ms
from activity_pipeline.demo_tenant.tenant import Page as ServerPage
from activity_pipeline.mdca import MdcaClient, MdcaSettings, RateLimiter, RetryPolicy, Scanner
from activity_pipeline.storage.core import Dataset
from activity_pipeline.storage.local import LocalStore

REPO = Path(__file__).resolve().parents[1]
# Three fixed days, so failures reproduce; the last is the stress day with a 6000-record tie.
DAYS = (dt.date(2026, 11, 21), dt.date(2026, 11, 22), dt.date(2026, 11, 23))
STRESS_DAY = DAYS[2]
TOKEN = "test-token-5f2c9a0e-do-not-log"
# The one tenant of the tests' definitions (MDCA_TENANT_NAME unset); the asset and the daily job of every tenant.
TENANT = "default"
ASSET = dg.AssetKey("activities")
JOB = "daily_activities"
NODE = "activities"  # the asset's op, as run results name it
FORBIDDEN_TOKEN = "no-rights-token-7d41"
# Far enough after the last day that every late record has arrived.
ALL_ARRIVED = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
# Where a test goes through Dagster, its days must be partitions (up to yesterday) and within the service's
# 180 days of the run's start, both by the real clock: "today" is read once, here.
TODAY = dt.datetime.now(dt.UTC).date()
# Two recent days (the `recent` fixture's): partitions, and inside the service's 180-day retention.
RECENT = (TODAY - dt.timedelta(days=3), TODAY - dt.timedelta(days=2))

# Fast backoff, so that tests exercise retries without waiting like production would. The waits after a 429
# without Retry-After (0.2 s doubling, up to 1 s: about 5 s over 12 attempts) still outlast the test servers'
# 2 s throttle window, as production's (10 s doubling) outlast the service's minute: with 4 threads racing
# for each freed slot, waits capped at 0.2 s let an unlucky thread spend all 12 attempts inside one window.
FAST_RETRY = RetryPolicy(max_attempts=12, max_seconds=120, backoff_first=0.01, backoff_max=1.0, throttle_default=0.2)


def last_days(n: int) -> tuple[dt.date, ...]:
    """The `n` complete UTC days before today, oldest first."""
    return tuple(TODAY - dt.timedelta(days=k) for k in range(n, 0, -1))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment of asking)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def later(days: int) -> dt.datetime:
    """Midnight UTC `days` after today: a tenant clock by which a recent day's late records have arrived."""
    return dt.datetime.combine(TODAY + dt.timedelta(days=days), dt.time(), dt.UTC)


def day_filter(day: dt.date) -> dict[str, dict[str, int]]:
    start = day_start_ms(day)
    return {"date": {"gte": start, "lt": start + DAY_MS}}


def serve(tenant: DemoTenant, **settings: Any) -> DemoTenantServer:
    """A started server with the test token and throttling off unless asked for; stop it when done."""
    base: dict[str, Any] = {"tokens": (TOKEN,), "forbidden_tokens": (FORBIDDEN_TOKEN,), "requests_per_minute": 0}
    base.update(settings)
    return DemoTenantServer(tenant, ServerSettings(**base)).start()


def client_for(url: str, *, token: str = TOKEN, limiter: RateLimiter | None = None, **kwargs: Any) -> MdcaClient:
    settings = MdcaSettings(api_url=url, api_token=token, requests_per_minute=0)
    kwargs.setdefault("retry", FAST_RETRY)
    return MdcaClient(settings, limiter=limiter or RateLimiter(0), **kwargs)


def scan_day(client: MdcaClient, day: dt.date, **kwargs: Any) -> tuple[list[str], Scanner]:
    start = day_start_ms(day)
    scanner = Scanner(client, start, start + DAY_MS, **kwargs)
    ids = [row.id for page in scanner for row in page.rows]
    return ids, scanner


def seed_loop(activities_url: str, your_token: str, request_data: dict[str, Any], *, quiet: bool = True) -> list:
    """The seed document's scan loop, kept as written; only the URL, the token and the request body vary.

    The baseline the benchmarks measure against, and the reference client of the demo tenant's tests: if the
    naive loop gets every record exactly once, the server keeps the scan-mode contract. It holds every
    record in memory, has no retries and never checks what it got; that is the point.
    """
    headers = {
        "Authorization": f"Token {your_token}",
    }
    records = []
    has_next = True
    while has_next:
        content = json.loads(requests.post(activities_url, json=request_data, headers=headers).content)
        response_data = content.get("data", [])
        records += response_data
        if not quiet:
            print(f"Got {len(response_data)} more records")
        has_next = content.get("hasNext", False)
        request_data["filters"] = content.get("nextQueryFilters")
    if not quiet:
        print(f"Got {len(records)} records in total")
    return records


# Misbehaving servers: copies of a tenant that break one rule of the API each.
class RepeatingCursor(DemoTenant):
    """A server whose cursor never moves: it hands back the filters it was given."""

    def scan(self, filters: dict[str, Any], **kw: Any) -> ServerPage:
        page = super().scan(filters, **kw)
        if page.has_next:
            page.next_filters = copy.deepcopy(filters)
        return page


class OverlappingPages(DemoTenant):
    """A server whose next page starts `overlap_ms` early, so records repeat across pages."""

    overlap_ms = 1000

    def scan(self, filters: dict[str, Any], **kw: Any) -> ServerPage:
        page = super().scan(filters, **kw)
        if page.has_next and page.next_filters:
            page.next_filters["date"]["gte"] -= self.overlap_ms
        return page


class WideOverlap(OverlappingPages):
    """Ten minutes of overlap, so that even sparse night slices repeat records."""

    overlap_ms = 600_000


class LeakyWindow(DemoTenant):
    """A server that answers for an hour more than was asked, on both sides of the window."""

    def scan(self, filters: dict[str, Any], **kw: Any) -> ServerPage:
        f = copy.deepcopy(filters)
        f["date"]["lte"] = f["date"]["lte"] + 3_600_000
        if "scanCursor" not in f and f["date"]["gte"] % DAY_MS == 0:
            f["date"]["gte"] -= 3_600_000
        return super().scan(f, **kw)


class Untidy(DemoTenant):
    """Some records lack `_id` or `timestamp`, some lack optional fields, some carry odd types."""

    def scan(self, filters: dict[str, Any], **kw: Any) -> ServerPage:
        page = super().scan(filters, **kw)
        records = []
        for k, text in enumerate(page.records):
            record = json.loads(text)
            if k % 500 == 7:
                del record["_id"]
            elif k % 500 == 9:
                record["timestamp"] = "yesterday"
            elif k % 50 == 3:
                del record["location"], record["device"]
            elif k % 70 == 5:
                record["appId"] = str(record["appId"])
            records.append(json.dumps(record, separators=(",", ":")))
        page.records = records
        return page


class IgnoresCreated(DemoTenant):
    """A server that ignores the `created` bound a client asks for (it still pages by `created` with the bounds it
    hands out itself): a top-up gets the whole day back."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._issued: set[int] = set()

    def scan(self, filters: dict[str, Any], **kw: Any) -> ServerPage:
        f = copy.deepcopy(filters)
        created = f.get("created")
        if isinstance(created, dict) and created.get("gte") not in self._issued:
            f.pop("created")
        page = super().scan(f, **kw)
        if page.next_filters and isinstance(page.next_filters.get("created"), dict):
            self._issued.add(page.next_filters["created"]["gte"])
        return page


class RepeatsIds(DemoTenant):
    """A server that adds the day's first records again to every page that starts after 20:00 (a scan by
    timestamp): repeats too far apart for a scan's memory of recent pages (a 1-slice scan of a day of 5 pages)."""

    def scan(self, filters: dict[str, Any], **kw: Any) -> ServerPage:
        page = super().scan(filters, **kw)
        window = filters.get("date") or {}
        start = window.get("gte")
        if isinstance(start, int) and start % DAY_MS > 20 * 3_600_000:
            day = start - start % DAY_MS
            first = super().scan({"date": {"gte": day, "lte": day + DAY_MS - 1}}, limit=500, sort_field="date",
                                 direction="asc")  # fmt: skip
            page.records = [*page.records, *first.records[:3]]
        return page


class OddRecords(DemoTenant):
    """Records the service may send that are still usable: a byte that is not UTF-8 in a description, times sent as
    strings of digits, fields of unexpected types; and, unusable, one without `_id` now and then."""

    # Every record whose position on its page is one of these is changed, as named.
    INVALID_BYTE, TIMESTAMP_TEXT, CREATED_TEXT, ODD_TYPES, NO_ID = 11, 13, 17, 19, 23

    def scan(self, filters: dict[str, Any], **kw: Any) -> ServerPage:
        page = super().scan(filters, **kw)
        records = []
        for k, text in enumerate(page.records):
            record = json.loads(text)
            kind = k % 400
            if kind == self.TIMESTAMP_TEXT:
                record["timestamp"] = str(record["timestamp"])
            elif kind == self.CREATED_TEXT:
                record["created"] = str(record["created"])
            elif kind == self.ODD_TYPES:
                record["location"], record["appId"] = ["not", "an", "object"], "eleven"
            elif kind == self.NO_ID:
                del record["_id"]
            text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
            if kind == self.INVALID_BYTE:
                # A Latin-1 "é" and a stray 0xff inside the description: bytes as received, not UTF-8.
                text = text.replace('"description":"', '"description":"caf\udce9 \udcff ', 1)
            records.append(text)
        page.records = records
        return page


class LosesRecords(DemoTenant):
    """A server that silently leaves out every 1000th record of its scan pages (its counts still hold them)."""

    def scan(self, filters: dict[str, Any], **kw: Any) -> ServerPage:
        page = super().scan(filters, **kw)
        page.records = [r for k, r in enumerate(page.records) if k % 1000 != 999]
        return page


def running_clock(start: dt.datetime, speed: float) -> Any:
    """A tenant clock that starts at `start` and runs `speed` times faster than real time (epoch ms)."""
    import time

    base, t0 = start.timestamp() * 1000, time.monotonic()
    return lambda: int(base + (time.monotonic() - t0) * 1000 * speed)


def broken(cls: type[DemoTenant], tenant: DemoTenant, **settings: Any) -> DemoTenantServer:
    """A server (not started: use it as a context manager) for a misbehaving copy of `tenant`."""
    copy_ = cls(tenant.spec)
    copy_.set_now(tenant.now_ms())
    return DemoTenantServer(copy_, ServerSettings(tokens=(TOKEN,), requests_per_minute=0, **settings))


# The project's definitions, run with test resources.
def tenant_resource(url: str, **kw: Any) -> MdcaResource:
    """The tenant at `url` with the test token, no client-side limit and a short retry budget."""
    kw.setdefault("api_token", TOKEN)
    kw.setdefault("requests_per_minute", 0)
    kw.setdefault("retry_max_attempts", 4)
    kw.setdefault("retry_max_seconds", 20)
    return MdcaResource(api_url=url, **kw)


def partition(day: dt.date | str, tenant: str = TENANT) -> str:
    """The partition key of the tenant's day: "2026-11-24|default"."""
    return str(key(day, tenant))


def project_defs(mdca: Any, data_dir: Path, **tenants: Any) -> dg.Definitions:
    """The project's real definitions (one tenant, "default"), with this tenant resource and a dataset in `data_dir`;
    `tenants`: other tenants' resources, by name, for definitions configured with them."""
    clients = TenantClients({TENANT: mdca, **tenants})
    return build_defs({MDCA: clients, "storage": ActivityStorage(data_dir=str(data_dir))})


def tenants_yaml(urls: dict[str, str]) -> str:
    """A tenants file for served tenants (name -> URL): each one's token in `<NAME>_TOKEN`, no client-side limit."""
    entries = (
        f"  - name: {name}\n    api_url: {url}\n    token_env: {name.upper()}_TOKEN\n    requests_per_minute: 0\n"
        for name, url in urls.items()
    )
    return "tenants:\n" + "".join(entries)


def tenant_data(data_dir: Path, tenant: str = TENANT) -> LocalStore:
    """The tenant's part of the dataset in `data_dir`."""
    return LocalStore(data_dir, tenant)


def materialize(day: dt.date, data_dir: Path, mdca: Any, **kw: Any) -> dg.ExecuteInProcessResult:
    """The `activities` asset alone, for one day (no checks, no views)."""
    asset = project_defs(mdca, data_dir).resolve_assets_def(ASSET)  # bound to these resources
    if "instance" in kw:
        return dg.materialize([asset], partition_key=partition(day), **kw)
    # Disposed of in the thread that made it: its SQLite storage may only be closed there.
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize([asset], partition_key=partition(day), instance=instance, **kw)


def run_day(day: dt.date, mdca: Any, data_dir: Path, **kw: Any) -> dg.ExecuteInProcessResult:
    """The daily job for one partition: the asset, its checks, the DuckDB views."""
    job = project_defs(mdca, data_dir).resolve_job_def(JOB)
    return job.execute_in_process(partition_key=partition(day), raise_on_error=False, **kw)


def check_only(name: str, day: dt.date, mdca: Any, data_dir: Path) -> dg.AssetCheckEvaluation:
    """Run one check for one partition, without re-materializing the day (as from the UI's check menu)."""
    defs = project_defs(mdca, data_dir)
    key = dg.AssetCheckKey(ASSET, name)
    job = dg.define_asset_job("one_check", selection=dg.AssetSelection.checks(key))
    with_job = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    # A checks-only job has no asset to take a partitions definition from (Dagster 1.13 refuses
    # partition_key= there), so the partition goes in as the run tag that partition_key= would set.
    tags = {"dagster/partition": partition(day), "dagster/partition/day": str(day), "dagster/partition/tenant": TENANT}
    result = with_job.resolve_job_def("one_check").execute_in_process(tags=tags, raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def run_failure_context(instance: dg.DagsterInstance, run_id: str, sensor_name: str) -> dg.RunFailureSensorContext:
    """The context a run-failure sensor gets for the failed run `run_id`, as the daemon gives it."""
    (failure,) = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    return dg.build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_event=failure.event_log_entry.dagster_event,  # type: ignore[arg-type]
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),  # type: ignore[arg-type]
    ).for_run_failure()


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any MDCA_* or ACTIVITY_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDCA_", "ACTIVITY_", "DAGSTER_HOME"))}
    env.update(extra)
    return env


def launch(day: dt.date | str, *, job: bool = False, tenant: str = TENANT) -> list[str]:
    """The README's headless command for one day: `dg launch` of the asset (or the daily job) for a tenant's day."""
    what = ["--job", JOB] if job else ["--assets", "activities"]
    dg_cli = str(Path(sys.executable).with_name("dg"))
    return [dg_cli, "launch", *what, "--partition", partition(day, tenant), "--target-path", str(REPO)]


def ready_instance(env: dict[str, str]) -> None:
    """Create the databases of the instance in env's DAGSTER_HOME, as `make` does before anything runs in it:
    processes that start together on a new SQLite instance race to create them."""
    dagster_cli = str(Path(sys.executable).with_name("dagster"))
    subprocess.run([dagster_cli, "instance", "migrate"], env=env, check=True, capture_output=True, timeout=300)


def cli_env(url: str, data_dir: Path, home: Path) -> dict[str, str]:
    """The environment of a headless run against the tenant at `url`, with its own Dagster instance in `home`."""
    home.mkdir(exist_ok=True)
    return clean_env(
        MDCA_API_URL=url,
        MDCA_API_TOKEN=TOKEN,
        MDCA_REQUESTS_PER_MINUTE="0",
        ACTIVITY_DATA_DIR=str(data_dir),
        ACTIVITY_START_DATE="2026-01-01",
        DAGSTER_HOME=str(home),
    )


def stored(dataset: Dataset, tenant: str, day: dt.date) -> list[tuple[str, str]]:
    """(id, raw) of a stored day as the DuckDB views read it (`Dataset.view_sources`), on either backend."""
    import duckdb

    sources = dataset.view_sources()
    if sources.activities is None:
        return []
    with duckdb.connect() as con:
        for sql in sources.setup:
            con.execute(sql)
        query = f"SELECT id, raw FROM ({sources.activities}) WHERE tenant = ? AND date = ?"
        return con.execute(query, [tenant, day]).fetchall()
