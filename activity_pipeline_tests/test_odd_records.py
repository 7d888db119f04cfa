"""Nothing with a usable `_id` and `timestamp` is left out: a byte that is not UTF-8, a time sent as a string of
digits, a field of an unexpected type are stored with their typed columns as far as they read, and the bytes as
received kept exactly; only records without a usable `_id` or `timestamp` go to quarantine, and the run says so."""

from __future__ import annotations

import base64
import json

import dagster as dg
import duckdb

from activity_pipeline.demo_tenant import TenantSpec
from activity_pipeline.ingest import ingest_day
from activity_pipeline.run_summary import run_line
from activity_pipeline_testing import helpers
from activity_pipeline_testing.helpers import (
    RECENT,
    STRESS_DAY,
    OddRecords,
    client_for,
    evaluations,
    stored,
    tenant_resource,
)


def _served(day):
    tenant = OddRecords(TenantSpec(days=(day,), activities_per_day=3_000))
    tenant.set_now(helpers.later(10))
    return tenant


def test_odd_but_usable_records_are_stored_with_their_bytes_kept_exactly(backend):
    tenant = _served(STRESS_DAY)
    with helpers.serve(tenant) as server:
        result = ingest_day(client_for(server.url), backend.store(), STRESS_DAY, slices=1)
    truth = tenant.truth_ids(STRESS_DAY)
    rows = dict(stored(backend.dataset, "contoso", STRESS_DAY))
    # Pages hold up to 5000 records, so each kind repeats every 400 records of the day's one page.
    without_id = len(range(OddRecords.NO_ID, len(truth), 400))
    assert result.quarantined == without_id and len(rows) == len(truth) - without_id
    manifest = backend.store().manifest(STRESS_DAY)
    assert len(manifest.received_bytes) == len(range(OddRecords.INVALID_BYTE, len(truth), 400)) > 0
    for rid, encoded in manifest.received_bytes.items():
        exact = base64.b64decode(encoded)
        assert b"caf\xe9 \xff" in exact, "the bytes as received, the invalid ones included"
        assert rows[rid] == exact.decode("utf-8", "replace"), "raw holds them with U+FFFD for each invalid byte"
        assert json.loads(rows[rid])["_id"] == rid
    con = duckdb.connect()
    for sql in backend.dataset.view_sources().setup:
        con.execute(sql)
    table = con.execute(
        f"SELECT id, epoch_ms(timestamp), epoch_ms(created), app_id, country_code, user_name, raw "
        f"FROM ({backend.dataset.view_sources().activities}) WHERE date = ?",
        [STRESS_DAY],
    ).fetchall()
    texts = [r for r in table if isinstance(json.loads(r[6])["timestamp"], str)]
    assert texts and all(r[1] == int(json.loads(r[6])["timestamp"]) for r in texts), "a time of digits is read"
    created = [r for r in table if isinstance(json.loads(r[6]).get("created"), str)]
    assert created and all(r[2] == int(json.loads(r[6])["created"]) for r in created)
    odd = [r for r in table if json.loads(r[6]).get("appId") == "eleven"]
    assert odd and all(r[3] is None and r[4] is None and r[5] for r in odd), "typed as far as they read"


def test_a_run_with_records_in_quarantine_says_so_by_name_and_count(tmp_path):
    day = RECENT[0]
    tenant = _served(day)
    instance = dg.DagsterInstance.ephemeral()
    with helpers.serve(tenant) as server:
        result = helpers.run_day(day, tenant_resource(server.url), tmp_path, instance=instance)
    checks = evaluations(result)
    quarantine = checks["no_quarantined_records"]
    n = len(range(OddRecords.NO_ID, len(tenant.truth_ids(day)), 400))
    assert not quarantine.passed and f"{n:,} records of default {day} had no usable _id or timestamp" in (
        quarantine.description
    )
    line = run_line(instance, instance.get_run_by_id(result.run_id), 10)
    assert f"SUCCESS WITH {n:,} RECORDS IN QUARANTINE" in line and "_quarantine.jsonl" in line, line
