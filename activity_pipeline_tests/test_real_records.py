"""Real published records of the API (fixtures/sample-activities.json) give the typed rows docs/dataset.md defines:
the actor wherever the record names it, the Entra object id only ever as a GUID, the failure and its code; and the
views built on them show real users."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pytest

from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline.storage.duckdb_views import build_database
from activity_pipeline.storage.schema import decode_activity, to_table

FIXTURE = json.loads((Path(__file__).with_name("fixtures") / "sample-activities.json").read_text())
RECORDS: list[dict[str, Any]] = FIXTURE["activities"]
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    raws = [msgspec.Raw(json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode()) for r in records]
    return to_table(raws, [decode_activity(r) for r in raws]).to_pylist()


def _names_anyone(record: dict[str, Any]) -> bool:
    """Whether the record names an actor anywhere a person would look."""
    raw = record.get("rawDataJson") or {}
    return any([(record.get("user") or {}).get("userName"), (record.get("failedUserData") or {}).get("userName"),
                (record.get("resolvedActor") or {}).get("id"), raw.get("Upn"), raw.get("UserId")])  # fmt: skip


def test_there_are_real_failed_sign_ins_without_a_user_name_among_the_fixtures():
    failed = [r for r in RECORDS if r["mainInfo"]["type"] == "failedLogin"]
    assert len(failed) >= 4 and all("userName" not in r["user"] for r in failed)
    assert {r["resolvedActor"]["objType"] for r in RECORDS} >= {"22", "23"}


@pytest.mark.parametrize("record", RECORDS, ids=[r["_id"][:12] for r in RECORDS])
def test_each_real_record_gives_its_expected_typed_row(record):
    (row,) = _rows([record])
    expected = dict(FIXTURE["expected"][record["_id"]])
    objects = expected.pop("objects")
    assert {k: row[k] for k in expected} == expected
    assert [[o["kind"], o["service_type"], o["name"]] for o in row["objects"]] == objects


@pytest.mark.parametrize("record", RECORDS, ids=[r["_id"][:12] for r in RECORDS])
def test_a_real_record_names_its_actor_and_never_a_upn_as_object_id(record):
    (row,) = _rows([record])
    if _names_anyone(record):
        assert row["user_name"] and "@" in row["user_name"]
    assert row["account_object_id"] is None or GUID.fullmatch(row["account_object_id"])
    if record["mainInfo"]["type"] == "failedLogin":
        assert row["failure_reason"] == record["mainInfo"]["activityResult"]["message"]
        assert row["sign_in_error_code"] == record["rawDataJson"]["LoginErrorCode"]


def test_the_actor_is_found_in_each_place_the_service_puts_it_in_turn():
    """Take a real failed sign-in, and remove the places that name the actor one by one, in the documented order."""
    record = copy.deepcopy(next(r for r in RECORDS if r["resolvedActor"]["objType"] == "22"))
    upn = record["failedUserData"]["userName"]
    assert _rows([record])[0]["user_name"] == upn
    del record["failedUserData"]
    assert _rows([record])[0]["user_name"] == record["resolvedActor"]["id"], "an unresolved actor's id is its UPN"
    record["resolvedActor"]["objType"] = "23"  # an actor whose id is not a UPN: the account object linked to it
    record["resolvedActor"]["id"] = "not-a-upn"
    assert _rows([record])[0]["user_name"] == record["resolvedActorAccount"]["id"]
    del record["resolvedActorAccount"]
    assert _rows([record])[0]["user_name"] == record["rawDataJson"]["Upn"]
    record["rawDataJson"]["Upn"] = ""
    assert _rows([record])[0]["user_name"] is None


def _store_day(root: Path, day: dt.date, records: list[dict[str, Any]]) -> None:
    """`records` as the day `day` of tenant contoso, through the writer a run uses."""
    store = open_dataset(root, None).tenant("contoso")
    raws = [msgspec.Raw(json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode()) for r in records]
    start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1000)
    with store.writer(day) as writer:
        writer.write(start, to_table(raws, [decode_activity(r) for r in raws]))
        writer.close_slice(start)
        writer.commit()


def _moved(record: dict[str, Any], day: dt.date, k: int) -> dict[str, Any]:
    """The real record, another of its kind: a new `_id`, and its times moved into `day` (k minutes past 10:00)."""
    moved = copy.deepcopy(record)
    ts = int(dt.datetime.combine(day, dt.time(10), dt.UTC).timestamp() * 1000) + k * 60_000
    moved["_id"] = f"{record['_id'][:-4]}{k:04d}"
    moved["timestamp"], moved["created"] = ts, ts + 240_000
    return moved


def test_failed_sign_ins_and_bursts_show_the_real_users(tmp_path):
    day = dt.date(2026, 11, 24)
    john = next(r for r in RECORDS if (r.get("failedUserData") or {}).get("userName", "").startswith("john@"))
    failed = [r for r in RECORDS if r["mainInfo"]["type"] == "failedLogin"]
    records = [_moved(r, day, k) for k, r in enumerate(RECORDS)]
    # A burst: with the two published, seven of John's failures within the hour.
    records += [_moved(john, day, 10 + k) for k in range(5)]
    _store_day(tmp_path, day, records)
    database = build_database(open_dataset(tmp_path, None))
    with duckdb.connect(str(database.path), read_only=True) as con:
        sign_ins = con.execute(
            "SELECT user_name, account_object_id, failure_reason, sign_in_error_code, is_external FROM failed_sign_ins"
        ).fetchall()
        bursts = con.execute("SELECT user_name, failed_sign_ins, account_object_id, error_codes "
                             "FROM user_failure_bursts").fetchall()  # fmt: skip
        events = con.execute(
            "SELECT AccountId, AccountObjectId, AccountDisplayName, IsExternalUser, IPCategory FROM cloud_app_events "
            "WHERE ReportId = ?",
            [records[2]["_id"]],
        ).fetchone()
    assert len(sign_ins) == len(failed) + 5 and all(u and "@" in u for u, *_ in sign_ins)
    assert ("arunvnnk_gmail.com#ext#@arunvnnkgmail.onmicrosoft.com", "58518ac4-40e0-4dc3-a56b-565dcfe4e9d3",
            "General failure", 16000, True) in sign_ins  # fmt: skip
    assert bursts == [("john@example.onmicrosoft.com", 7, "3fa9f28b-eb0e-463a-ba7b-8089fe9991e2", [50126])]
    assert events == ("john@example.onmicrosoft.com", "3fa9f28b-eb0e-463a-ba7b-8089fe9991e2", "John Example", False,
                      "CLOUD_PROXY_NETWORK_IP")  # fmt: skip


def test_a_field_of_an_unexpected_type_costs_only_itself():
    record = copy.deepcopy(next(r for r in RECORDS if r["resolvedActor"]["objType"] == "23" and "failedUserData" in r))
    record["rawDataJson"]["LoginErrorCode"] = "50126"  # a number as a string of digits
    record["resolvedActor"]["objType"] = 23  # a number where the service sends a string
    record["mainInfo"]["eventObjects"].append("not an object")
    record["location"]["ipTags"] = "not a list"
    (row,) = _rows([record])
    expected = FIXTURE["expected"][record["_id"]]
    assert row["sign_in_error_code"] == 50126 and row["account_object_id"] == expected["account_object_id"]
    assert row["ip_tags"] is None and len(row["objects"]) == len(expected["objects"])
    assert row["user_name"] == expected["user_name"] and row["region"] == expected["region"]
