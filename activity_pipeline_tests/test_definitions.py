"""The definitions as `dg` sees them: everything found in defs/, and the demo tenant only when it is used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from activity_pipeline import config
from activity_pipeline.definitions import defs
from activity_pipeline.defs.resources import DemoTenantResource, MdcaResource, mdca_key, resources_for
from activity_pipeline_testing.helpers import JOB, REPO, TENANT, clean_env

DG = str(Path(sys.executable).with_name("dg"))


def test_dg_check_defs_passes_without_superseded_warnings():
    out = subprocess.run([DG, "check", "defs"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "All definitions loaded successfully" in out.stdout + out.stderr
    assert "superseded" not in out.stdout + out.stderr


def test_dg_list_defs_shows_the_assets_checks_job_schedule_and_sensor():
    out = subprocess.run([DG, "list", "defs", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    listed = json.loads(out.stdout)
    assert {a["asset_key"] for a in listed["assets"]} == {"default/activities", "activities_duckdb"}
    assert {c["key"] for c in listed["asset_checks"]} == {
        f"default/activities:{name}"
        for name in (
            "count_matches_source",
            "ids_unique",
            "timestamps_in_partition",
            "no_quarantined_records",
            "schema_matches",
            "no_unexpected_silent_hours",
            "apps_still_reporting",
            "collected_under_current_filters",
            "no_days_leaving_retention_unstored",
            "stored_files_intact",
        )
    }
    assert sorted(j["name"] for j in listed["jobs"]) == ["activities_verification", "default_compact_day", JOB]
    assert sorted(s["name"] for s in listed["schedules"]) == ["activities_verification_schedule", f"{JOB}_schedule"]
    assert sorted(s["name"] for s in listed["sensors"]) == [
        "default_compaction", "default_late_arrivals", "default_retention_rescue"
    ]  # fmt: skip


def test_with_a_real_tenant_configured_nothing_of_the_demo_tenant_is_imported():
    probe = (
        "import sys; from activity_pipeline.definitions import defs; d = defs(); "
        f"d.resolve_job_def('{JOB}'); "
        "print(sorted(m for m in sys.modules if m.startswith('activity_pipeline.demo_tenant')))"
    )
    env = clean_env(MDCA_API_URL="https://contoso.eu2.portal.cloudappsecurity.com", MDCA_API_TOKEN="t")
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"


def test_the_environment_chooses_the_tenant_resource():
    assert isinstance(resources_for(config.load({}))[mdca_key(TENANT)], DemoTenantResource)
    env = {"MDCA_API_URL": "https://contoso.eu2.portal.cloudappsecurity.com", "MDCA_API_TOKEN": "t"}
    real = resources_for(config.load(env))
    assert isinstance(real[mdca_key(TENANT)], MdcaResource)


def test_the_module_loads_as_dagster_loads_it():
    loaded = defs()
    assert loaded.resolve_job_def(JOB).partitions_def is not None
    assert set(loaded.resources) == {mdca_key(TENANT), "storage"}


def test_no_module_of_the_package_is_over_450_lines():
    package = REPO / "activity_pipeline"
    sizes = {p.relative_to(package).as_posix(): len(p.read_text().splitlines()) for p in package.rglob("*.py")}
    # The demo tenant's catalog is data (apps, events, places), not logic.
    sizes.pop("demo_tenant/catalog.py")
    assert {name: n for name, n in sizes.items() if n > 450} == {}


def test_make_runs_runs_are_runs_of_the_code_location_the_ui_loads():
    """`make run`'s runs name the location `dg dev` (pyproject) and `dagster-webserver -w` (workspace.yaml) load,
    or the UI's Overview timeline leaves them out (test_ui shows them there)."""
    import tomllib

    import yaml

    from activity_pipeline.launch import LOCATION

    dg_project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    assert dg_project["code_location_name"] == LOCATION
    assert [entry["python_module"]["location_name"] for entry in workspace] == [LOCATION]
