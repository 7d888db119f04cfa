"""Every make target uses the Dagster instance DAGSTER_HOME names, and .dagster_home/ only when it is unset."""

from __future__ import annotations

import subprocess

import dagster as dg

from activity_pipeline_testing.helpers import JOB, RECENT, REPO, clean_env, cli_env, partition

SHOW = "show-home: ; @echo $$DAGSTER_HOME"


def _home_seen_by_recipes(env: dict[str, str]) -> str:
    out = subprocess.run(["make", "-s", f"--eval={SHOW}", "show-home"], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True, timeout=60)  # fmt: skip
    return out.stdout.strip()


def test_make_uses_the_dagster_home_of_the_environment_and_its_own_only_when_unset(tmp_path):
    assert _home_seen_by_recipes(clean_env(DAGSTER_HOME=str(tmp_path / "prod"))) == str(tmp_path / "prod")
    assert _home_seen_by_recipes(clean_env()) == str(REPO / ".dagster_home")


def test_make_run_records_its_run_in_that_instance_and_keeps_its_settings(tmp_path, recent_server):
    home = tmp_path / "prod"
    env = cli_env(recent_server.url, tmp_path / "data", home)
    settings = "telemetry:\n  enabled: false\n# the production instance's own settings\n"
    (home / "dagster.yaml").write_text(settings)
    proc = subprocess.run(["make", "-s", "run", f"DAY={RECENT[0]}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (home / "dagster.yaml").read_text() == settings, "an instance's own settings are never overwritten"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name=JOB))
    assert [r.tags.get("dagster/partition") for r in runs] == [partition(RECENT[0])]


def test_make_run_full_rescan_scans_a_stored_day_anew(tmp_path, recent_server):
    env = cli_env(recent_server.url, tmp_path / "data", tmp_path / "home")
    for extra in ([], ["FULL_RESCAN=1"]):
        proc = subprocess.run(["make", "-s", "run", f"DAY={RECENT[0]}", *extra], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name=JOB))  # newest first
        modes = []
        for run in runs:
            (record,) = instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records[:1]
            modes.append(record.asset_materialization.metadata["mode"].value)
    assert runs[0].tags.get("activity_pipeline/full_rescan") == "true"
    assert modes == ["full", "full"], "the second run scanned the stored day in full, not a top-up"
