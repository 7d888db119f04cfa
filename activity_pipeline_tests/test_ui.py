"""The Dagster UI, checked in a real browser: three materialized days, their checks' verdicts, the row count.

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

from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline_tests.helpers import REPO, cli_env, free_port, last_days, later, run_day, serve, tenant_resource

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
# Without these Chromium reaches for the network at start-up (updates, sync, field trials) and stalls here.
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
    tenant = DemoTenant(TenantSpec(days=days, activities_per_day=3_000))
    tenant.set_now(later(5))
    server = serve(tenant)
    webserver = None
    try:
        instance = dg.DagsterInstance.from_config(str(home))
        for day in days:
            assert run_day(day, tenant_resource(server.url), data, instance=instance).success
        port = free_port()
        webserver = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(port),
             "-w", str(REPO / "workspace.yaml")],
            env=cli_env(server.url, data, home), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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


def test_the_asset_shows_three_materialized_partitions(ui, browser):
    from playwright.sync_api import expect

    url, days, tmp = ui
    page = _open(browser, url + "/assets/activities?view=partitions")
    expect(page.get_by_text("Materialized (3)")).to_be_visible()
    expect(page.get_by_text("Failed (0)")).to_be_visible()
    for day in days:
        expect(page.get_by_text(day.isoformat()).first).to_be_visible()
    page.screenshot(path=str(tmp / "partitions.png"), full_page=True)


def test_the_checks_show_their_verdicts_and_unjudged_ones_as_skipped(ui, browser):
    from playwright.sync_api import expect

    url, _, tmp = ui
    page = _open(browser, url + "/assets/activities?view=checks")
    expect(page.get_by_text("Checks (7)")).to_be_visible()
    verdicts = {
        "count_matches_source": "Succeeded",
        "ids_unique": "Succeeded",
        "timestamps_in_partition": "Succeeded",
        "no_quarantined_records": "Succeeded",
        "schema_matches": "Succeeded",
        # Three days stored, none of them with three stored days before it: nothing to judge yet.
        "no_unexpected_silent_hours": "Skipped",
        "apps_still_reporting": "Skipped",
    }
    expect(page.get_by_text("Succeeded").first).to_be_visible()
    # The list on the left: each check's name (a link, and its label), then its latest verdict.
    lines = [line.strip() for line in page.inner_text("body").splitlines() if line.strip()]
    shown = {lines[i]: lines[i + 2] for i in range(len(lines) - 2) if lines[i] in verdicts and lines[i + 1] == lines[i]}
    assert shown == verdicts
    page.screenshot(path=str(tmp / "checks.png"), full_page=True)
    assert (tmp / "checks.png").stat().st_size > 10_000


def test_the_overview_shows_the_row_count(ui, browser):
    from playwright.sync_api import expect

    url, _, tmp = ui
    page = _open(browser, url + "/assets/activities")
    expect(page.get_by_text("Row count")).to_be_visible()
    expect(page.get_by_text("9,000", exact=True)).to_be_visible()  # 3 days of 3,000, every one stored
    page.screenshot(path=str(tmp / "overview.png"), full_page=True)
