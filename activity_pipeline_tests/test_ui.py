"""The Dagster UI, checked in a real browser: every tenant's days in one grid (three materialized days of one
tenant, one of the other), the checks' verdicts, the row count.

Debian's Chromium (`apt-get install chromium`; `.ci/run` installs it), driven by Playwright with
`executable_path`: Playwright's own browser download is not reachable here, and not needed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import requests

from activity_pipeline.components.automation import JOB
from activity_pipeline.components.partitions import key
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.launch import launch
from activity_pipeline_testing.helpers import REPO, clean_env, free_port, last_days, later, serve, tenants_yaml

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
# Without these Chromium reaches for the network at start-up (updates, sync, field trials) and stalls here.
# Two tenants: contoso with three days of 3,000 activities, fabrikam with its newest day only.
UI_TENANTS = (("contoso", 3_000, 31), ("fabrikam", 2_000, 32))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> Iterator[tuple[str, tuple, Path]]:
    """A Dagster webserver on a free port, over an instance holding three materialized demo days."""
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium is not installed ({CHROMIUM}); `apt-get install chromium` (.ci/run does it)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (it is in the dev extras)")
    tmp = tmp_path_factory.mktemp("ui")
    home, data = tmp / "home", tmp / "data"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    days = last_days(3)
    tenants = {n: DemoTenant(TenantSpec(days=days, activities_per_day=k, seed=s)) for n, k, s in UI_TENANTS}
    servers = {}
    webserver = None
    try:
        for name, tenant in tenants.items():
            tenant.set_now(later(5))
            servers[name] = serve(tenant, tokens=(f"token-{name}",))
        tenants_file = tmp / "tenants.yaml"
        tenants_file.write_text(tenants_yaml({n: s.url for n, s in servers.items()}))
        env = clean_env(
            ACTIVITY_TENANTS_FILE=str(tenants_file),
            ACTIVITY_DATA_DIR=str(data),
            ACTIVITY_START_DATE="2026-01-01",
            DAGSTER_HOME=str(home),
            **{f"{n.upper()}_TOKEN": f"token-{n}" for n in tenants},
        )
        instance = dg.DagsterInstance.from_config(str(home))
        # Each run as `make run` and `make demo` make it: a run of the code location the UI loads.
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                mp.setenv(name, value)
            mp.chdir(REPO)
            for day in days:
                assert launch(instance, JOB, str(key(day, "contoso"))).status == dg.DagsterRunStatus.SUCCESS
            assert launch(instance, JOB, str(key(days[-1], "fabrikam"))).status == dg.DagsterRunStatus.SUCCESS
        port = free_port()
        webserver = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(port),
             "-w", str(REPO / "workspace.yaml")],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert webserver.poll() is None, "the webserver exited"
            time.sleep(0.5)
        else:
            pytest.fail("the webserver did not answer within 180 s")
        yield url, days, tmp
    finally:
        if webserver is not None:
            webserver.terminate()
            webserver.wait(timeout=30)
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def browser(ui) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _page(browser: object, url: str) -> object:
    page = browser.new_page(viewport={"width": 1600, "height": 1000})  # type: ignore[attr-defined]
    page.set_default_timeout(60_000)
    page.goto(url, wait_until="networkidle")
    return page


def _open(browser: object, url: str) -> object:
    """A page at `url`, past Dagster's first-visit newsletter prompt."""
    page = _page(browser, url)
    skip = page.get_by_role("button", name="Skip")  # type: ignore[attr-defined]
    if skip.count():
        skip.click()
    return page


def test_one_grid_shows_every_tenants_days(ui, browser):
    """The operator's picture: the `activities` asset's partitions are a grid of days by tenants, each tenant's
    stored days materialized (three of contoso's, one of fabrikam's), the others missing."""
    from playwright.sync_api import expect

    url, _, tmp = ui
    page = _open(browser, url + "/assets/activities?view=partitions")
    expect(page.get_by_text("Materialized (4)")).to_be_visible()
    expect(page.get_by_text("Failed (0)")).to_be_visible()
    page.screenshot(path=str(tmp / "partitions.png"), full_page=True)
    # Both dimensions side by side: the days, each marked with its tenants' states, and the tenants, each with
    # its days' states.
    expect(page.get_by_placeholder("Filter by day…")).to_be_visible()
    expect(page.get_by_placeholder("Filter by tenant…")).to_be_visible()
    for name, _, _ in UI_TENANTS:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    assert (tmp / "partitions.png").stat().st_size > 10_000


def test_the_checks_show_their_verdicts_and_why_the_unjudged_ones_did_not_judge(ui, browser):
    from playwright.sync_api import expect

    url, _, tmp = ui
    page = _open(browser, url + "/assets/activities?view=checks")
    expect(page.get_by_text("Checks (10)")).to_be_visible()
    verdicts = {
        "count_matches_source": "Succeeded",
        "ids_unique": "Succeeded",
        "timestamps_in_partition": "Succeeded",
        "no_quarantined_records": "Succeeded",
        "schema_matches": "Succeeded",
        # The latest day checked is fabrikam's, its only one: no stored days before it to judge by. Each says so in
        # its own result (a pass marked as not judged), so the list and each check's latest result agree.
        "no_unexpected_silent_hours": "Succeeded",
        "apps_still_reporting": "Succeeded",
        # Not read again since written: the weekly verification reads it.
        "stored_files_intact": "Succeeded",
    }
    expect(page.get_by_text("Succeeded").first).to_be_visible()
    # The list on the left: each check's name (a link, and its label), then its latest verdict.
    lines = [line.strip() for line in page.inner_text("body").splitlines() if line.strip()]
    shown = {lines[i]: lines[i + 2] for i in range(len(lines) - 2) if lines[i] in verdicts and lines[i + 1] == lines[i]}
    assert shown == verdicts
    # The eighth, whose long name the list may shorten: demo tenants' days are never at risk.
    assert "no_days_leaving_retention" in page.inner_text("body")
    page.screenshot(path=str(tmp / "checks.png"), full_page=True)
    assert (tmp / "checks.png").stat().st_size > 10_000
    # The reason, in the check's own result for that day.
    page.get_by_text("apps_still_reporting", exact=True).first.click()
    expect(page.get_by_text("Not judged yet: only 0 of the 7 days before").first).to_be_visible()
    page.screenshot(path=str(tmp / "check-reason.png"), full_page=True)


def test_the_views_asset_shows_the_row_count_of_every_tenant(ui, browser):
    from playwright.sync_api import expect

    url, _, tmp = ui
    page = _open(browser, url + "/assets/activities_duckdb")
    expect(page.get_by_text("Row count")).to_be_visible()
    expect(page.get_by_text("11,000", exact=True)).to_be_visible()  # contoso's 3 days of 3,000, fabrikam's 2,000
    page.screenshot(path=str(tmp / "overview.png"), full_page=True)


def test_runs_made_as_make_run_makes_them_are_on_the_overview_timeline(ui, browser):
    from playwright.sync_api import expect

    url, _, tmp = ui
    page = _open(browser, url + "/overview/activity/timeline")
    expect(page.get_by_text(JOB, exact=True).first).to_be_visible()
    expect(page.get_by_text("No runs or scheduled ticks in this time period")).to_have_count(0)
    page.screenshot(path=str(tmp / "timeline.png"), full_page=True)


def test_the_picture_of_each_tenants_days_is_linked_from_the_views_asset_and_drawn(ui, browser):
    """activities_duckdb's metadata links activities.html; in the browser it draws each tenant's days: contoso's
    three, fabrikam's one, each with its activities and the count check's verdict."""
    from playwright.sync_api import expect

    url, days, tmp = ui
    page = _open(browser, url + "/assets/activities_duckdb")
    expect(page.get_by_text("picture", exact=True).first).to_be_visible()
    link = page.locator("a[href$='activities.html']").first
    expect(link).to_be_visible()
    picture = _page(browser, link.get_attribute("href"))
    expect(picture.get_by_role("heading", name="contoso")).to_be_visible()
    expect(picture.get_by_role("heading", name="fabrikam")).to_be_visible()
    drawn = {
        name: picture.locator(f"section[data-tenant='{name}'] g.day").evaluate_all(
            "gs => gs.map(g => [g.dataset.date, g.dataset.state, Number(g.dataset.rows)])"
        )
        for name in ("contoso", "fabrikam")
    }
    assert [(d, s) for d, s, _ in drawn["contoso"]] == [(str(day), "passed") for day in days]
    assert [(d, s) for d, s, _ in drawn["fabrikam"]] == [(str(days[-1]), "passed")]
    assert all(rows > 0 for _, _, rows in drawn["contoso"] + drawn["fabrikam"])
    # Each day's figures in its tooltip.
    assert f"{days[0]}: " in picture.locator("section[data-tenant='contoso'] g.day title").first.text_content()
    picture.screenshot(path=str(tmp / "picture.png"), full_page=True)
    assert (tmp / "picture.png").stat().st_size > 5_000
