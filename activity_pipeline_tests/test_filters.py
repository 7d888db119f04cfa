"""A tenant's own API filters (`filters:`, MDCA_FILTERS): checked at load, sent with every request, recorded with
each day, and a day of other filters flagged, never mixed. Over real HTTP against the demo tenant."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import requests

from activity_pipeline import config
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.errors import ConfigError
from activity_pipeline_testing.helpers import (
    REPO,
    TOKEN,
    check_only,
    clean_env,
    day_filter,
    evaluations,
    last_days,
    later,
    run_day,
    tenant_data,
    tenant_resource,
)

OFFICE = 11161  # Office 365, the demo tenant's busiest app
FULL_RESCAN = {"activity_pipeline/full_rescan": "true"}


def _day(data_dir: Path, day: dt.date) -> dict[str, dict]:
    """The stored day: id -> the record as received."""
    table = pq.read_table(tenant_data(data_dir).paths.day_dir(day), columns=["id", "raw"])
    return {i: json.loads(r) for i, r in zip(table["id"].to_pylist(), table["raw"].to_pylist(), strict=True)}


def _admin(record: dict) -> bool:
    """An administrative activity of the demo tenant: its events say so in genericEventType (no field of a real
    record is known to carry what the `activity.type` filter selects)."""
    return record["genericEventType"] == "ENUM_ACTIVITY_GENERIC_TYPE_ADMINISTRATION"


@pytest.fixture
def day_served(served):
    day = last_days(3)[0]
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=6_000, seed=5))
    tenant.set_now(later(5))
    return day, tenant, served(tenant)


def test_a_filtered_day_is_exactly_the_subset_the_filters_select_with_its_count_check_passing(tmp_path, day_served):
    day, _, url = day_served
    runs = {
        "all": {},
        "office": {"service": {"eq": [OFFICE]}},
        "not_office": {"service": {"neq": [OFFICE]}},
        # ANDed: administrative activities from IPs that are not risky (category 3)
        "admin_safe": {"activity.type": {"eq": True}, "ip.category": {"neq": [3]}},
    }
    days = {}
    for name, filters in runs.items():
        result = run_day(day, tenant_resource(url, filters=filters), tmp_path / name)
        assert result.success, name
        count = evaluations(result)["count_matches_source"]
        assert count.passed, (name, count.description)
        assert evaluations(result)["collected_under_current_filters"].passed
        days[name] = _day(tmp_path / name, day)
        assert tenant_data(tmp_path / name).manifest(day).filters == config.TenantConfig("t", filters=filters).filters
    everything = days["all"]
    office, others = days["office"], days["not_office"]
    assert office and others and not office.keys() & others.keys()
    assert office.keys() | others.keys() == everything.keys()
    assert {r["appId"] for r in office.values()} == {OFFICE}
    assert OFFICE not in {r["appId"] for r in others.values()}
    expected = {
        i for i, r in everything.items() if _admin(r) and json.loads(
            r["location"] if isinstance(r["location"], str) else json.dumps(r["location"]))["category"] != 3
    }  # fmt: skip
    assert expected and days["admin_safe"].keys() == expected
    with duckdb.connect(str(tmp_path / "office" / "activities.duckdb"), read_only=True) as con:
        row = con.execute("SELECT rows_stored, drift, collected_under_filters FROM partition_health").fetchone()
    assert row == (len(office), 0, '{"service":{"eq":[11161]}}')


def test_slices_and_top_ups_keep_the_filters(tmp_path, served):
    day = last_days(3)[0]
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=8_000, seed=9))
    tenant.set_now(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(1), dt.UTC))  # late records still to come
    url = served(tenant)
    filters = {"service": {"neq": [OFFICE]}}
    first = run_day(day, tenant_resource(url, filters=filters, slices=4), tmp_path)
    assert first.success and evaluations(first)["count_matches_source"].passed
    assert tenant_data(tmp_path).manifest(day).scan["slices"] == 4
    stored = _day(tmp_path, day)
    assert stored and OFFICE not in {r["appId"] for r in stored.values()}
    tenant.advance(dt.timedelta(days=3))
    topped = run_day(day, tenant_resource(url, filters=filters), tmp_path)
    assert topped.success and evaluations(topped)["count_matches_source"].passed
    manifest = tenant_data(tmp_path).manifest(day)
    assert manifest.top_ups and manifest.top_ups[-1].added > 0 and manifest.filters == filters
    after = _day(tmp_path, day)
    assert len(after) > len(stored) and OFFICE not in {r["appId"] for r in after.values()}
    with requests.post(
        f"{url}/api/v1/activities/",
        headers={"Authorization": f"Token {TOKEN}"},
        json={"filters": {**day_filter(day), "service": {"neq": [OFFICE]}}, "limit": 1},
    ) as answer:
        assert answer.json()["total"] == len(after)  # fmt: skip


def test_a_changed_filter_is_flagged_and_never_mixed_until_the_day_is_collected_again(tmp_path, day_served):
    day, _, url = day_served
    old, new = {"service": {"neq": [OFFICE]}}, {"activity.type": {"eq": True}}
    assert run_day(day, tenant_resource(url, filters=old), tmp_path).success
    before = _day(tmp_path, day)
    flagged = check_only("collected_under_current_filters", day, tenant_resource(url, filters=new), tmp_path)
    assert not flagged.passed and flagged.severity.value == "WARN"
    assert '{"service":{"neq":[11161]}}' in flagged.description and "full_rescan=true" in flagged.description
    # The count check counts the day under the filters it was collected under: still exact.
    assert check_only("count_matches_source", day, tenant_resource(url, filters=new), tmp_path).passed
    # A run without full_rescan would top the day up under the new filters: refused, the day unchanged.
    refused = run_day(day, tenant_resource(url, filters=new), tmp_path)
    assert not refused.success and _day(tmp_path, day).keys() == before.keys()
    failure = next(e for e in refused.all_events if e.event_type_value == "STEP_FAILURE")
    assert "would mix the two" in str(failure.event_specific_data.error)
    # Collected again under the new filters: fewer activities, and that is what was asked.
    again = run_day(day, tenant_resource(url, filters=new), tmp_path, tags=FULL_RESCAN)
    assert again.success and evaluations(again)["collected_under_current_filters"].passed
    after = _day(tmp_path, day)
    assert 0 < len(after) < len(before) + 6_000 and all(_admin(r) for r in after.values())
    assert tenant_data(tmp_path).manifest(day).filters == new


BAD = [
    ({"servce": {"eq": [11161]}}, ["unknown filter `servce`", "did you mean `service`", "user.orgUnit"]),
    ({"service": {"contains": "Teams"}}, ["`service` does not take the operator `contains`", "eq, neq"]),
    ({"service": {"eq": ["Office"]}}, ["`service` `eq` takes an app id", "'Office'"]),
    ({"activity.type": {"eq": "yes"}}, ["`activity.type` `eq` takes true or false"]),
    ({"ip.category": {"eq": [9]}}, ["`ip.category` `eq` takes an IP category", "3 risky"]),
    ({"ip.address": {"eq": "10.0.0"}}, ["`ip.address` `eq` takes an IP address"]),
    ({"user.username": {"isset": "yes"}}, ["`user.username` `isset` takes true"]),
    ({"activity.takenAction": {"eq": "blocked"}}, ["one of block, proxy"]),
    ({"service": {"eq": []}}, ["at least one value"]),
    ({"date": {"gte": 0}}, ["`date` is the pipeline's own"]),
    ({"created": {"lte": 0}}, ["`created` is the pipeline's own"]),
    ({"service": 11161}, ["`service` takes a mapping of operator to value"]),
]


@pytest.mark.parametrize(("filters", "said"), BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_each_kind_of_bad_filter_stops_loading_naming_the_tenant_line_and_filter(tmp_path, filters, said):
    body = "\n".join(f"      {json.dumps(name)}: {json.dumps(spec)}" for name, spec in filters.items())
    path = tmp_path / "tenants.yaml"
    path.write_text(f"tenants:\n  - name: contoso\n    demo: true\n    automation: false\n    filters:\n{body}\n")
    with pytest.raises(ConfigError) as info:
        config.load({"ACTIVITY_TENANTS_FILE": str(path), "ACTIVITY_DATA_DIR": str(tmp_path)})
    message = str(info.value)
    assert f"tenant 'contoso' (line 2 of {path})" in message and "`filters`, line 6" in message, message
    for text in said:
        assert text in message, message


def test_mdca_filters_is_the_same_object_as_json_checked_the_same_way(tmp_path):
    env = {"ACTIVITY_DATA_DIR": str(tmp_path), "MDCA_FILTERS": '{"service": {"neq": 20893}}'}
    assert config.load(env).tenants[0].filters == {"service": {"neq": [20893]}}
    for text, said in [('{"service": {"neq": 20893}', "MDCA_FILTERS must be a JSON object"),
                       ('{"srvice": {"eq": 1}}', "MDCA_FILTERS: unknown filter `srvice`")]:  # fmt: skip
        with pytest.raises(ConfigError, match=said):
            config.load({**env, "MDCA_FILTERS": text})


def test_loading_the_definitions_stops_at_a_bad_filter_and_make_tenants_shows_good_ones(tmp_path):
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  - name: contoso\n    demo: true\n    filters:\n      service: {neq: [20893]}\n"
                    "  - name: fabrikam\n    demo: true\n")  # fmt: skip
    env = clean_env(ACTIVITY_TENANTS_FILE=str(path), ACTIVITY_DATA_DIR=str(tmp_path))
    shown = subprocess.run(["make", "-s", "-C", str(REPO), "tenants"], env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    demo = "demo tenant: synthetic activities, served on 127.0.0.1 while a run goes"
    filters = 'filters: {"service":{"neq":[20893]}}'
    assert shown.stdout.splitlines() == [f"contoso\t{demo}\t{filters}", f"fabrikam\t{demo}"]
    path.write_text("tenants:\n  - name: contoso\n    demo: true\n    filters:\n      service: {has: [20893]}\n")
    started = time.monotonic()
    loaded = subprocess.run([sys.executable, "-c", "import activity_pipeline.definitions as d; d.defs()"], env=env,
                            cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    print(f"a bad filter stopped loading in {time.monotonic() - started:.1f}s")
    assert loaded.returncode != 0
    assert "`service` does not take the operator `has`; it takes eq, neq" in loaded.stderr
    assert "Traceback" not in loaded.stderr, "said alone, not under a traceback"


def test_the_demo_tenant_refuses_an_unknown_filter_with_a_400_naming_it(day_served):
    day, _, url = day_served

    def ask(extra: dict) -> requests.Response:
        body = {"filters": {**day_filter(day), **extra}, "limit": 1}
        return requests.post(f"{url}/api/v1/activities/", headers={"Authorization": f"Token {TOKEN}"}, json=body,
                             timeout=30)  # fmt: skip

    answer = ask({"app.colour": {"eq": ["red"]}})
    assert answer.status_code == 400 and "app.colour" in answer.text
    answer = ask({"device.type": {"contains": "x"}})
    assert answer.status_code == 400 and "device.type" in answer.text and "contains" in answer.text
    assert ask({"device.type": {"eq": ["DESKTOP"]}}).json()["total"] > 0
