"""`make demo`: the daily job for the last 3 days of the demo tenant, and its report."""

from __future__ import annotations

import subprocess
import sys

from activity_pipeline_tests.helpers import clean_env, last_days


def test_make_demo_runs_the_daily_job_and_reports(tmp_path):
    """What `make demo` runs, with ACTIVITY_DATA_DIR exported as the Makefile does."""
    (tmp_path / "home").mkdir()
    env = clean_env(DAGSTER_HOME=str(tmp_path / "home"), ACTIVITY_DATA_DIR=str(tmp_path / "data"))
    out = subprocess.run([sys.executable, "-m", "activity_pipeline.demo"], env=env, capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = out.stdout
    for day in last_days(3):
        line = next(x for x in report.splitlines() if x.startswith(day.isoformat()))
        assert "count_matches_source=pass" in line and "ids_unique=pass" in line, line
    assert "Microsoft Exchange Online" in report
    assert (tmp_path / "data" / "activities.duckdb").exists()
