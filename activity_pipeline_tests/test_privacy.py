"""Private by default (issue 36): whatever the umask, everything the project writes under the data folder is its
owner's alone (folders 0700, files 0600), after a run, a top-up, a compaction, a verification and a retention
deletion; a group is granted on purpose only (ACTIVITY_DATA_GROUP); `make upgrade` closes a dataset written before."""

from __future__ import annotations

import datetime as dt
import grp
import os
import stat
import subprocess
from pathlib import Path

from activity_pipeline_testing.helpers import REPO, TOKEN, clean_env

LOOSE = 0o022  # the common default umask: files 0644, folders 0755


def _make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """make, started under the loose umask, as a shell of most machines would start it."""
    return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO), *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
                          preexec_fn=lambda: os.umask(LOOSE))  # fmt: skip


def _open_paths(root: Path, allowed: int = 0) -> list[str]:
    """Every path under `root` (and `root`) that another user (or a group beyond `allowed`) could use, or that is
    not this user's: what `find root ! -user $USER -o -perm /o+rwx` would find, and group bits besides."""
    found = []
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        loose = stat.S_IMODE(info.st_mode) & (0o077 & ~allowed)
        if loose or info.st_uid != os.getuid():
            found.append(f"{path.relative_to(root)} {stat.filemode(info.st_mode)}")
    return found


def _env(tmp_path: Path, url: str, start: dt.date, extra: str = "", **more: str) -> dict[str, str]:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(f"tenants:\n  - {{name: lab, api_url: '{url}', token_env: LAB_TOKEN, requests_per_minute: 0"
                       f"{extra}}}\n")  # fmt: skip
    (tmp_path / "home").mkdir(exist_ok=True)
    return clean_env(ACTIVITY_TENANTS_FILE=str(tenants), ACTIVITY_DATA_DIR=str(tmp_path / "data"),
                     DAGSTER_HOME=str(tmp_path / "home"), LAB_TOKEN=TOKEN, ACTIVITY_START_DATE=str(start),
                     **more)  # fmt: skip


def test_nothing_under_the_data_folder_is_readable_by_others_whatever_the_umask(tmp_path, recent, recent_server):
    old, new = sorted(recent.spec.days)
    env = _env(tmp_path, recent_server.url, old)
    data = tmp_path / "data"
    steps = [("run", f"DAY={old}"), ("run", f"DAY={new}"), ("run", f"DAY={new}"),  # a scan, a scan, a top-up
             ("compact", f"DAY={new}"), ("verify",), ("check", f"DAY={new}")]  # fmt: skip
    for step in steps:
        out = _make(env, *step)
        assert out.returncode == 0, out.stdout[-2000:]
        assert _open_paths(data) == [], step
    # A retention deletion: keep_days set afterwards; the older day goes, with its audit record.
    keep = (dt.datetime.now(dt.UTC).date() - new).days
    env = _env(tmp_path, recent_server.url, old, f", keep_days: {keep}")
    out = _make(env, "retention")
    assert out.returncode == 0, out.stdout[-2000:]
    assert list((data / "_deleted").rglob("*.json")), "the deletion left its audit record"
    assert (data / "activities.duckdb").exists() and (data / "activities.html").exists()
    assert _open_paths(data) == []
    mode = stat.S_IMODE(next(data.rglob("*.parquet")).stat().st_mode)
    assert mode == 0o600 and stat.S_IMODE(data.stat().st_mode) == 0o700


def test_a_group_reads_the_dataset_only_when_granted(tmp_path, recent, recent_server):
    old, _ = sorted(recent.spec.days)
    group = grp.getgrgid(os.getgid()).gr_name
    env = _env(tmp_path, recent_server.url, old, ACTIVITY_DATA_GROUP=group)
    out = _make(env, "run", f"DAY={old}")
    assert out.returncode == 0, out.stdout[-2000:]
    data = tmp_path / "data"
    assert _open_paths(data, allowed=0o050) == [], "the group reads (and searches folders), others nothing"
    parquet = next(data.rglob("*.parquet"))
    assert stat.S_IMODE(parquet.stat().st_mode) == 0o640 and parquet.stat().st_gid == os.getgid()
    assert stat.S_IMODE(data.stat().st_mode) & 0o2000, "new files belong to the group (set-group-ID)"
    # A group that does not exist is a configuration mistake, named.
    out = _make({**env, "ACTIVITY_DATA_GROUP": "no_such_group_x"}, "tenants")
    assert out.returncode != 0 and "ACTIVITY_DATA_GROUP='no_such_group_x' is not a group" in out.stdout


def test_make_upgrade_closes_a_dataset_written_before(tmp_path, recent, recent_server):
    old, _ = sorted(recent.spec.days)
    env = _env(tmp_path, recent_server.url, old)
    assert _make(env, "run", f"DAY={old}").returncode == 0
    data = tmp_path / "data"
    # As a dataset written before this release lies on disk: folders 0755, files 0644.
    for path in [data, *data.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    assert _open_paths(data)
    out = _make(env, "upgrade")
    assert out.returncode == 0, out.stdout[-2000:]
    assert "paths tightened" in out.stdout
    assert _open_paths(data) == []
