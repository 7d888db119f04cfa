"""One partition of a tenant's job, run in this process as a run of the code location the UI shows.

`make run`, `make backfill` and `make demo` start their runs here. A run made by `dg launch` or
`execute_in_process` carries no code-location origin, and the UI's Overview timeline leaves such runs out
("No runs or scheduled ticks in this time period"). A run made here names the location `make ui` loads
(`activity_pipeline`, from pyproject's `[tool.dg.project]` and `workspace.yaml`) and its repository, as a
run launched from the UI does, and then executes in this process as `dg launch` would: the same logs on the
console, the same interruption handling (SIGTERM or Ctrl-C ends it as a failed run).

    python -m activity_pipeline.launch daily_activities '2026-11-24|contoso' [--config-json '{...}']
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.remote_representation.external import RemoteJob
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._utils.hosted_user_process import recon_job_from_origin
from dagster._utils.interrupts import capture_interrupts, setup_interrupt_handlers

MODULE = "activity_pipeline.definitions"
# The code location's name wherever the UI loads it: pyproject's [tool.dg.project] code_location_name (dg dev)
# and workspace.yaml's location_name; test_launch checks all three agree.
LOCATION = "activity_pipeline"
REPOSITORY = "__repository__"


def launch(
    instance: dg.DagsterInstance,
    job_name: str,
    partition: str,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
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
        if not location.get_repository(REPOSITORY).has_job(job_name):
            why = _ABSENT.get(job_name, "it is not defined")
            raise JobAbsentError(f"{job_name}: no such job in this deployment: {why}")
        remote_job: RemoteJob = location.get_job(selector)
        recon_job = recon_job_from_origin(remote_job.get_python_origin())
        job_def = recon_job.get_definition()
        tags = {**remote_job.tags, **_partition_tags(job_def, partition), **(tags or {})}
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


class JobAbsentError(LookupError):
    """The job is not defined by this configuration."""


# Jobs defined only when the configuration calls for them, and what does.
_ABSENT = {
    "retention": "no tenant sets keep_days (docs/configuration.md), so there is nothing to delete",
    "intraday_activities": "every tenant has intraday_minutes: 0",
    "activities_vacuum": "the dataset is not on object storage (ACTIVITY_DATA_URL)",
}


def _partition_tags(job_def: dg.JobDefinition, partition: str) -> dict[str, str]:
    """The run tags of `partition` ("": a job without partitions). A job of checks alone has no asset to take a
    partitions definition from: its partition goes in as the tags a partitioned run carries, which its checks read."""
    if not partition:
        return {}
    if job_def.partitions_def is not None:
        job_def.validate_partition_key(partition, selected_asset_keys=None, context=None)
        return dict(job_def.get_tags_for_partition_key(partition, selected_asset_keys=None))
    from activity_pipeline.components.partitions import DAY, TENANT

    day, _, tenant = partition.partition("|")
    return {"dagster/partition": partition, f"dagster/partition/{DAY}": day, f"dagster/partition/{TENANT}": tenant}


# The signals that stop make (GNU make catches these and, on SIGINT or SIGHUP, waits for its children).
_MAKE_STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Exit status of a run that was interrupted: make's recipes stop their loops on it (128 + SIGINT).
INTERRUPTED = 130


def _signal_mask(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1], 16)
    return 0


def _make_ancestor() -> int | None:
    """The `make` this process runs under (its parent, or the recipe shell's parent), if any (Linux)."""
    pid = os.getppid()
    for _ in range(3):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip().endswith("make"):
                return pid
            pid = int(next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("PPid:"))
                      .split()[1])  # fmt: skip
        except (OSError, StopIteration, ValueError):
            return None
    return None


def stop_with_make(on_stop: Callable[[], None], every: float = 0.5) -> threading.Event | None:
    """Call `on_stop` once when the `make` this process runs under is told to stop, or dies.

    A supervisor stops `make run` by signalling the PID it started: make's. GNU make passes SIGTERM to its
    recipe's shell but not to the shell's children, and on SIGINT or SIGHUP waits for its children without
    telling them; either way the run went on. make resets the signal it is handling to its default while it
    waits (so it no longer catches it), and blocks it: both show in /proc, which this watches. Returns an event
    that ends the watch; None when there is no make above this process (or no /proc).
    """
    make = _make_ancestor()
    if make is None:
        return None
    fatal = sum(1 << (s - 1) for s in _MAKE_STOPS)
    try:
        caught = _signal_mask(make, "SigCgt") & fatal
    except OSError:
        return None
    parent, done = os.getppid(), threading.Event()

    def watch() -> None:
        while not done.wait(every):
            try:
                handling = (caught & ~_signal_mask(make, "SigCgt")) or (_signal_mask(make, "SigBlk") & fatal)
            except OSError:
                handling = True  # make is gone
            if handling or os.getppid() != parent:
                on_stop()
                return

    threading.Thread(target=watch, name="stop-with-make", daemon=True).start()
    return done


def interrupt_this_process() -> None:
    """What a Ctrl-C does: the run in this process ends as interrupted (`capture_interrupts`)."""
    os.kill(os.getpid(), signal.SIGINT)


def handle_stop_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP end a run here as interrupted, even when this process was started in the
    background, which ignores SIGINT (a recipe's shell starts it so, to pass make's signals on itself)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    setup_interrupt_handlers()  # SIGTERM as SIGINT
    signal.signal(signal.SIGHUP, signal.getsignal(signal.SIGINT))
    stop_with_make(interrupt_this_process)


def was_interrupted(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether `run` failed because it was interrupted (a signal), not of itself."""
    failures = instance.all_logs(
        run.run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    )
    return any("interrupt" in repr(e.dagster_event).lower() for e in failures)


def _merged(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """`b` over `a`, mapping by mapping."""
    out = dict(a)
    for key, value in b.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m activity_pipeline.launch", description=__doc__.splitlines()[0])
    parser.add_argument("job")
    parser.add_argument("partition", nargs="?", default="", help="DAY|TENANT; none for a job without partitions")
    parser.add_argument(
        "--config-json",
        action="append",
        default=[],
        help="the run's config, as dg launch takes it (repeatable, merged)",
    )
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="a run tag (repeatable)")
    args = parser.parse_args(argv)
    tags = dict(t.split("=", 1) for t in args.tag if "=" in t)
    handle_stop_signals()
    try:
        config: dict[str, Any] = {}
        for text in args.config_json:
            config = _merged(config, json.loads(text))
        run = launch(dg.DagsterInstance.get(), args.job, args.partition, config, tags)
    except KeyboardInterrupt:
        return INTERRUPTED  # before the run began: nothing was written
    except JobAbsentError as exc:
        print(exc, file=sys.stderr)
        return 2
    if run.status == dg.DagsterRunStatus.SUCCESS:
        return 0
    return INTERRUPTED if was_interrupted(dg.DagsterInstance.get(), run) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
