"""Where a tenant's files live, and days stored before tenants existed moved under one."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from activity_pipeline.storage.layout import adopt_legacy_days, legacy_days
from activity_pipeline.storage.local import LocalStore
from activity_pipeline_testing.helpers import REPO, clean_env

DAY, OTHER = dt.date(2026, 11, 20), dt.date(2026, 11, 21)


def legacy_dataset(root: Path, *days: dt.date) -> None:
    """Days as versions before tenants wrote them: `activities/date=...` and `_health/<day>.json`."""
    for day in days:
        scratch = LocalStore(root, "scratch")
        with scratch.writer(day, run_id=f"legacy-{day}") as writer:
            writer.commit()
        scratch.paths.day_dir(day).rename(root / "activities" / f"date={day}")
        (root / "_health").mkdir(exist_ok=True)
        (root / "_health" / f"{day}.json").write_text(json.dumps({"day": str(day), "passed": True}))
    (root / "activities" / "tenant=scratch").rmdir()


def test_a_tenants_files_live_under_its_name():
    data = LocalStore(Path("/srv/data"), "contoso")
    assert data.paths.day_dir(DAY) == Path("/srv/data/activities/tenant=contoso/date=2026-11-20")
    assert data.staging == Path("/srv/data/.staging/tenant=contoso")
    assert data.paths.health == Path("/srv/data/_health/tenant=contoso")


def test_days_stored_before_tenants_move_under_the_tenant_whole_and_only_once(tmp_path):
    legacy_dataset(tmp_path, DAY, OTHER)
    data = LocalStore(tmp_path, "contoso")
    done = adopt_legacy_days(data.paths)
    assert done.days == [DAY, OTHER] and done.conflicts == []
    assert data.manifest(DAY).run_id == f"legacy-{DAY}"
    assert (data.paths.health / f"{DAY}.json").exists() and not (tmp_path / "_health" / f"{DAY}.json").exists()
    assert legacy_days(tmp_path) == []
    assert adopt_legacy_days(data.paths).days == [], "nothing left to move"


def test_a_day_the_tenant_already_has_is_left_where_it_was(tmp_path):
    data = LocalStore(tmp_path, "contoso")
    with data.writer(DAY, run_id="new") as writer:
        writer.commit()
    legacy_dataset(tmp_path, DAY)
    done = adopt_legacy_days(data.paths)
    assert done.conflicts == [DAY] and done.days == []
    assert data.manifest(DAY).run_id == "new"
    assert legacy_days(tmp_path) == [tmp_path / "activities" / f"date={DAY}"]


def test_the_migrate_command_moves_the_days_under_the_tenant_it_is_told(tmp_path):
    legacy_dataset(tmp_path, DAY)
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - name: contoso\n    demo: true\n  - name: fabrikam\n    demo: true\n")
    env = clean_env(ACTIVITY_TENANTS_FILE=str(tenants), ACTIVITY_DATA_DIR=str(tmp_path))
    command = [sys.executable, "-m", "activity_pipeline.migrate"]
    wrong = subprocess.run([*command, "nobody"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "configured: contoso, fabrikam" in wrong.stderr
    out = subprocess.run([*command, "fabrikam"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "moved 1 days under activities/tenant=fabrikam/" in out.stdout
    assert LocalStore(tmp_path, "fabrikam").manifest(DAY) is not None
