"""Moving a deployment onto one asset for every tenant: the stored days become the grid's materialized
partitions, once, without a request to any tenant."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import dagster as dg

from activity_pipeline_testing.helpers import REPO, clean_env, last_days, ready_instance, tenant_data


def test_record_stored_days_reports_each_stored_day_once(tmp_path):
    days = last_days(2)
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: contoso, demo: true}\n  - {name: fabrikam, demo: true}\n")
    for name, stored in (("contoso", days), ("fabrikam", days[:1])):
        for day in stored:
            with tenant_data(tmp_path / "data", name).writer(day) as writer:
                writer.commit()
    env = clean_env(ACTIVITY_TENANTS_FILE=str(tenants), ACTIVITY_DATA_DIR=str(tmp_path / "data"),
                    DAGSTER_HOME=str(tmp_path / "home"))  # fmt: skip
    (tmp_path / "home").mkdir()
    ready_instance(env)
    command = [sys.executable, "-m", "activity_pipeline.migrate", "--record-stored-days"]
    first = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "reported 3 stored days" in first.stdout
    again = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "reported 0 stored days" in again.stdout, "a day the instance knows is left alone"
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        known = set(instance.get_materialized_partitions(dg.AssetKey("activities")))
    assert known == {f"{d}|contoso" for d in days} | {f"{days[0]}|fabrikam"}
    assert all(dt.date.fromisoformat(k.split("|")[0]) in days for k in known)
