"""An operator's day (issue 35): what a person sees when something goes wrong, from make.

Each expected failure ends `make run` with one line that names its cause and its fix, and no traceback on the
console (the run's log in the UI keeps the whole error); a failed check prints its numbers; the checks of a day
that failed are said not to have run."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import pytest

from activity_pipeline.demo_tenant import TenantSpec
from activity_pipeline_testing.helpers import (
    FORBIDDEN_TOKEN,
    REPO,
    LosesRecords,
    cli_env,
    last_days,
    later,
    serve,
)

DAY = last_days(2)[0]


def _make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """make's output as a terminal shows it: both streams, in order, in `stdout`."""
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)  # fmt: skip


def _last_line(out: subprocess.CompletedProcess) -> str:
    """The last line make's recipe printed (make's own `make: *** ... Error 1` aside)."""
    # make's own line is `make: ***`, or `make[1]: ***` when this runs under make (make test).
    lines = [line for line in out.stdout.splitlines() if line and not re.match(r"make(\[\d+\])?: \*\*\*", line)]
    return lines[-1]


@pytest.mark.parametrize(
    ("case", "cause", "fix"),
    [
        ("refused token", "The API rejected the credentials (401", "check MDCA_API_TOKEN"),
        ("dead server", "refused the connection (nothing listens there)", "Check MDCA_API_URL"),
        ("lost records", "count_matches_source: 3 activities created up to", "FULL_RESCAN=1"),
    ],
)
def test_make_run_ends_with_the_cause_and_the_fix_and_prints_no_traceback(tmp_path: Path, case, cause, fix):
    tenant = LosesRecords(TenantSpec(days=(DAY,), activities_per_day=3_000))
    tenant.set_now(later(5))
    with serve(tenant) as server:
        url = "http://127.0.0.1:1" if case == "dead server" else server.url
        env = cli_env(url, tmp_path / "data", tmp_path / "home")
        if case == "refused token":
            env["MDCA_API_TOKEN"] = "revoked-" + FORBIDDEN_TOKEN
        out = _make(env, "run", f"DAY={DAY}")
    text = out.stdout
    assert out.returncode != 0
    last = _last_line(out)
    assert last.startswith(f"default {DAY}: FAILURE") and cause in last and fix in last, last
    assert "Traceback" not in text and "Stack Trace" not in text, text[-3000:]
    if case == "lost records":
        # The numbers: stored, at the source, the difference.
        assert "diff" in last or "missing" in last, last
    else:
        assert "checks: 10 not run" in last


def _tenants_file(path: Path, url: str, extra: str = "") -> Path:
    path.write_text(
        f"tenants:\n  - {{name: lab, api_url: '{url}', token_env: LAB_TOKEN, requests_per_minute: 0{extra}}}\n"
    )
    return path


def test_every_runbook_step_runs_from_make(tmp_path: Path, recent, recent_server):
    """FULL_RESCAN=1 scans a stored day again in full; `make check` runs its checks alone; `make retention` deletes
    the days older than keep_days at once, and the DuckDB file shows it without another run."""
    import duckdb

    from activity_pipeline_testing.helpers import TOKEN, clean_env, tenant_data

    old, new = sorted(recent.spec.days)
    data, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    tenants = _tenants_file(tmp_path / "tenants.yaml", recent_server.url)
    env = clean_env(ACTIVITY_TENANTS_FILE=str(tenants), ACTIVITY_DATA_DIR=str(data), DAGSTER_HOME=str(home),
                    LAB_TOKEN=TOKEN, ACTIVITY_START_DATE=str(old))  # fmt: skip
    for day in (old, new):
        assert _make(env, "run", f"DAY={day}").returncode == 0
    store = tenant_data(data, "lab")
    first = store.manifest(new)
    # A full re-scan of a stored day: a new version, scanned whole (no top-up), the same rows.
    out = _make(env, "run", f"DAY={new}", "TENANT=lab", "FULL_RESCAN=1")
    assert out.returncode == 0, _last_line(out)
    again = store.manifest(new)
    assert again.run_id != first.run_id and again.top_ups == [] and again.rows == first.rows
    # The day's checks alone: the verdicts, nothing collected.
    requests = recent_server.stats.requests
    out = _make(env, "check", f"DAY={new}", "TENANT=lab")
    assert out.returncode == 0, _last_line(out)
    assert _last_line(out).startswith(f"lab {new}: SUCCESS; checks: ") and "pass" in _last_line(out)
    assert store.manifest(new) == again, "make check collects nothing"
    assert recent_server.stats.requests - requests <= 3, "only the count check asks the service"
    # Retention: keep_days set afterwards; the older day goes, and the views show it at once.
    keep = (dt.datetime.now(dt.UTC).date() - new).days  # the first kept day is `new`
    _tenants_file(tenants, recent_server.url, f", keep_days: {keep}")
    out = _make(env, "retention")
    assert out.returncode == 0 and _last_line(out) == "retention: SUCCESS", out.stdout
    assert store.manifest(old) is None and store.manifest(new) is not None
    with duckdb.connect(str(data / "activities.duckdb"), read_only=True) as con:
        assert con.execute("SELECT tenant, date FROM deleted_days").fetchall() == [("lab", old)]
        assert con.execute("SELECT DISTINCT date FROM activities").fetchall() == [(new,)]


def test_make_retention_without_keep_days_says_there_is_nothing_to_delete(tmp_path: Path, recent_server):
    from activity_pipeline_testing.helpers import TOKEN, clean_env

    tenants = _tenants_file(tmp_path / "tenants.yaml", recent_server.url)
    (tmp_path / "home").mkdir()
    env = clean_env(ACTIVITY_TENANTS_FILE=str(tenants), ACTIVITY_DATA_DIR=str(tmp_path / "data"),
                    DAGSTER_HOME=str(tmp_path / "home"), LAB_TOKEN=TOKEN)  # fmt: skip
    out = _make(env, "retention")
    assert out.returncode != 0
    assert "no tenant sets keep_days" in _last_line(out)


def test_make_tenants_checks_every_credential_variable_without_a_request(tmp_path: Path):
    from activity_pipeline_testing.helpers import clean_env

    base = clean_env(ACTIVITY_DATA_DIR=str(tmp_path), MDCA_API_URL="https://contoso.eu2.portal.cloudappsecurity.com")
    for extra, said in [
        ({"MDCA_API_TOKEN": " "}, "MDCA_API_TOKEN is set but empty"),
        ({"MDCA_API_TOKEN": "t0k3n-do-not-log", "MDCA_CLIENT_ID": "c"}, "Both kinds of credentials are set"),
        ({"MDCA_TENANT_ID": "t"}, "MDCA_CLIENT_ID, MDCA_CLIENT_SECRET missing"),
    ]:
        out = _make({**base, **extra}, "-s", "tenants")
        assert out.returncode == 2 and said in out.stdout, out.stdout
        assert "t0k3n-do-not-log" not in out.stdout
    # A token without a URL would go unused (the demo tenant runs): a mistake, named.
    out = _make(clean_env(ACTIVITY_DATA_DIR=str(tmp_path), MDCA_API_TOKEN="t0k3n-do-not-log"), "-s", "tenants")
    assert out.returncode == 2 and "MDCA_API_TOKEN is set but MDCA_API_URL is not" in out.stdout
    assert "t0k3n-do-not-log" not in out.stdout


def test_a_tenants_file_with_three_mistakes_names_all_three_in_one_run(tmp_path: Path):
    from activity_pipeline_testing.helpers import clean_env

    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n"
        "  - {name: north, api_url: 'https://north.example', tokn_env: NORTH_TOKEN}\n"
        "  - {name: south, demo: true, keep_days: -3}\n"
        "  - {name: west, demo: true, intraday_minutes: 9999}\n"
    )
    out = _make(clean_env(ACTIVITY_TENANTS_FILE=str(path), ACTIVITY_DATA_DIR=str(tmp_path)), "-s", "tenants")
    assert out.returncode == 2
    lines = out.stdout.splitlines()
    assert any("tenant 'north' (line 2" in line and "did you mean `token_env`?" in line for line in lines)
    assert any("tenant 'south' (line 3" in line and "`keep_days`" in line for line in lines)
    assert any("tenant 'west' (line 4" in line and "`intraday_minutes`" in line for line in lines)


def test_make_tenants_probe_asks_each_tenant_once_and_says_each_result_on_its_line(tmp_path: Path, recent_server):
    from activity_pipeline_testing.helpers import TOKEN, clean_env

    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n"
        f"  - {{name: good, api_url: '{recent_server.url}', token_env: GOOD_TOKEN}}\n"
        f"  - {{name: refused, api_url: '{recent_server.url}', token_env: BAD_TOKEN}}\n"
        "  - {name: lab, demo: true}\n"
    )
    env = clean_env(ACTIVITY_TENANTS_FILE=str(path), ACTIVITY_DATA_DIR=str(tmp_path), GOOD_TOKEN=TOKEN,
                    BAD_TOKEN="revoked-do-not-log")  # fmt: skip
    before = recent_server.stats.requests
    out = _make(env, "-s", "tenants", "PROBE=1")
    assert out.returncode != 0
    lines = [line for line in out.stdout.splitlines() if not re.match(r"make(\[\d+\])?:", line)]
    assert lines[0].startswith("good\tok: the API answered")
    assert lines[1].startswith("refused\tFAILED: The API rejected the credentials") and "BAD_TOKEN" in lines[1]
    assert lines[2].startswith("lab\tdemo tenant")
    assert recent_server.stats.requests - before == 2, "one request per real tenant"
    assert TOKEN not in out.stdout and "revoked-do-not-log" not in out.stdout


def test_day_arguments_say_what_is_wrong_and_which_setting_sets_the_range(tmp_path: Path):
    from activity_pipeline_testing.helpers import clean_env

    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  - {name: kept, demo: true, keep_days: 30}\n")
    env = clean_env(ACTIVITY_TENANTS_FILE=str(path), ACTIVITY_DATA_DIR=str(tmp_path / "data"),
                    DAGSTER_HOME=str(tmp_path / "home"))  # fmt: skip
    for day in ("2026-12-3", "03/12/2026", "yesterday"):
        out = _make(env, "-s", "run", f"DAY={day}")
        assert out.returncode != 0 and f"DAY={day} is not a day: write it as YYYY-MM-DD" in _last_line(out)
    old = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=60)
    out = _make(env, "-s", "run", f"DAY={old}")
    assert out.returncode != 0
    last = _last_line(out)
    assert "its keep_days (30)" in last and "start_date" not in last, last


def test_a_tenant_from_a_file_is_never_told_to_check_an_mdca_variable(tmp_path: Path):
    from activity_pipeline_testing.helpers import clean_env

    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  - {name: dead, api_url: 'http://127.0.0.1:1', token_env: DEAD_TOKEN}\n")
    env = clean_env(ACTIVITY_TENANTS_FILE=str(path), ACTIVITY_DATA_DIR=str(tmp_path / "data"),
                    DAGSTER_HOME=str(tmp_path / "home"), DEAD_TOKEN="t")  # fmt: skip
    out = _make(env, "run", f"DAY={DAY}")
    last = _last_line(out)
    assert out.returncode != 0 and "refused the connection" in last
    assert "the `api_url` of tenant 'dead' in the tenants file" in last and "MDCA_" not in out.stdout, last


def test_the_views_asset_draws_each_tenants_days(tmp_path: Path):
    """activities.html beside the DuckDB file: a section per tenant, a bar per day (activities, failures) and its
    completeness (the count check passed, or the day missing), linked from activities_duckdb's metadata."""
    from activity_pipeline.demo_tenant import DemoTenant
    from activity_pipeline_testing.helpers import run_day, tenant_data, tenant_resource

    first, _, third = last_days(3)
    tenant = DemoTenant(TenantSpec(days=(first, third), activities_per_day=2_000))
    tenant.set_now(later(5))
    with serve(tenant) as server:
        for day in (first, third):
            result = run_day(day, tenant_resource(server.url), tmp_path)
            assert result.success
    (made,) = result.asset_materializations_for_node("activities_duckdb")
    page = tmp_path / "activities.html"
    assert made.metadata["picture"].value == f"file://{page}"
    text = page.read_text()
    days = re.findall(r'<g class="day" data-date="([0-9-]+)" data-rows="(\d+)" data-state="([a-z ]+)">', text)
    store = tenant_data(tmp_path)
    assert days == [
        (str(first), str(store.manifest(first).rows), "passed"),
        (str(first + dt.timedelta(days=1)), "0", "missing"),
        (str(third), str(store.manifest(third).rows), "passed"),
    ]
    assert 'data-tenant="default"' in text and "failed;" in text
