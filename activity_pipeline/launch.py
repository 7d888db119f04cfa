"""One partition of a tenant's job, run in this process as a run of the code location the UI shows.

`make run`, `make backfill` and `make demo` start their runs here. A run made by `dg launch` or
`execute_in_process` carries no code-location origin, and the UI's Overview timeline leaves such runs out
("No runs or scheduled ticks in this time period"). A run made here names the location `make ui` loads
(`activity_pipeline`, from pyproject's `[tool.dg.project]` and `workspace.yaml`) and its repository, as a
run launched from the UI does, and then executes in this process as `dg launch` would: the same logs on the
console, the same interruption handling (SIGTERM or Ctrl-C ends it as a failed run).

    python -m activity_pipeline.launch contoso_daily_activities 2026-11-24 [--config-json '{...}']
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.remote_representation.external import RemoteJob
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._utils.hosted_user_process import recon_job_from_origin
from dagster._utils.interrupts import capture_interrupts

MODULE = "activity_pipeline.definitions"
# The code location's name wherever the UI loads it: pyproject's [tool.dg.project] code_location_name (dg dev)
# and workspace.yaml's location_name; test_launch checks all three agree.
LOCATION = "activity_pipeline"
REPOSITORY = "__repository__"


def launch(
    instance: dg.DagsterInstance, job_name: str, partition: str, run_config: Mapping[str, Any] | None = None
) -> dg.DagsterRun:
    """Create the run of `job_name` for `partition` as a run of the UI's code location, execute it here, and
    return it as it ended."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=MODULE, working_directory=os.getcwd()),
        location_name=LOCATION,
    )
    with origin.create_location(instance) as location:
        repository = location.get_repository(REPOSITORY)
        selector = JobSubsetSelector(
            location_name=LOCATION, repository_name=REPOSITORY, job_name=job_name, op_selection=None
        )
        remote_job: RemoteJob = location.get_job(selector)
        recon_job = recon_job_from_origin(remote_job.get_python_origin())
        job_def = recon_job.get_definition()
        job_def.validate_partition_key(partition, selected_asset_keys=None, context=None)
        tags = {**remote_job.tags, **job_def.get_tags_for_partition_key(partition, selected_asset_keys=None)}
        plan = location.get_execution_plan(
            remote_job, dict(run_config or {}), step_keys_to_execute=None, known_state=None, instance=instance
        ).execution_plan_snapshot
        run = instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=dict(run_config or {}),
            resolved_op_selection=None,
            step_keys_to_execute=plan.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags=tags,
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=repository.asset_graph,
        )
    with capture_interrupts():
        execute_run(recon_job, run, instance)
    ended = instance.get_run_by_id(run.run_id)
    assert ended is not None
    return ended


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m activity_pipeline.launch", description=__doc__.splitlines()[0])
    parser.add_argument("job")
    parser.add_argument("partition")
    parser.add_argument("--config-json", default="{}", help="the run's config, as dg launch takes it")
    args = parser.parse_args(argv)
    run = launch(dg.DagsterInstance.get(), args.job, args.partition, json.loads(args.config_json))
    return 0 if run.status == dg.DagsterRunStatus.SUCCESS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
