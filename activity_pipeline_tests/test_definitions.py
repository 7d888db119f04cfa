"""The definitions as `dg` sees them: everything found in defs/, and the demo tenant only when it is used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from activity_pipeline import config
from activity_pipeline.components.resources import MDCA, DemoTenantResource, MdcaResource, resources_for
from activity_pipeline.definitions import defs
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
    assert {a["asset_key"] for a in listed["assets"]} == {"activities", "activities_duckdb"}
    assert {c["key"] for c in listed["asset_checks"]} == {
        f"activities:{name}"
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
    assert sorted(j["name"] for j in listed["jobs"]) == [
        "activities_verification", "check_day", "compact_day", JOB, "intraday_activities"
    ]  # fmt: skip
    assert sorted(s["name"] for s in listed["schedules"]) == ["activities_verification_schedule", f"{JOB}_schedule"]
    assert sorted(s["name"] for s in listed["sensors"]) == [
        "compaction", "intraday", "late_arrivals", "service_window_rescue"
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
    assert isinstance(resources_for(config.load({}))[MDCA].resource_fn(None)[TENANT], DemoTenantResource)
    env = {"MDCA_API_URL": "https://contoso.eu2.portal.cloudappsecurity.com", "MDCA_API_TOKEN": "t"}
    real = resources_for(config.load(env))
    assert isinstance(real[MDCA].resource_fn(None)[TENANT], MdcaResource)


def test_the_module_loads_as_dagster_loads_it():
    loaded = defs()
    partitions = loaded.resolve_job_def(JOB).partitions_def
    assert partitions is not None and partitions.partition_dimension_names == ["day", "tenant"]
    assert set(loaded.resources) == {MDCA, "storage"}


def _definitions_of(tmp_path: Path, tenants: int) -> dict[str, int]:
    lines = "".join(
        f"  - {{name: t{i:04d}, api_url: 'https://t{i}.eu2.portal.cloudappsecurity.com', token_env: T}}\n"
        for i in range(tenants)
    )
    tmp_path.mkdir()
    (tmp_path / "tenants.yaml").write_text("tenants:\n" + lines)
    probe = (
        "import json; from activity_pipeline.definitions import defs; d = defs(); "
        "jobs = d.resolve_all_job_defs(); "
        "print(json.dumps({'jobs': len(jobs), 'schedules': len(list(d.schedules or [])), "
        "'sensors': len(list(d.sensors or [])), 'assets': len(list(d.assets or []))}))"
    )
    env = clean_env(ACTIVITY_TENANTS_FILE=str(tmp_path / "tenants.yaml"), ACTIVITY_DATA_DIR=str(tmp_path), T="t")
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_definitions_do_not_grow_with_the_tenants(tmp_path):
    """A tenant is a partition key, not an asset, a job, a schedule and sensors of its own (bench.many_tenants
    measures the load time and memory at 100, 300 and 1,000)."""
    one, many = _definitions_of(tmp_path / "one", 1), _definitions_of(tmp_path / "many", 50)
    assert one == many


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
