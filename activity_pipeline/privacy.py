"""Private by default: the archive is a record of who signed in from where, so only its owner reads it.

Every process that writes the dataset loads the configuration first (`config.load`), which sets the process's
file-creation mask here: whatever the umask it started with, everything it then creates (the days' Parquet and
manifests, the DuckDB file and the picture, staging, quarantine, findings, audit records, compaction's temporary
files, and anything DuckDB, pyarrow or delta-rs write on its behalf) is created readable by its owner only:
folders 0700, files 0600.

A group may be granted on purpose, never by accident: with `ACTIVITY_DATA_GROUP=<group>` the mask lets that group
read (folders 0750, files 0640), and the data folder is given to the group with the set-group-ID bit, so everything
created under it belongs to that group rather than to the writer's. Datasets written before are tightened by
`make upgrade` (`tighten`).
"""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

from activity_pipeline.errors import ConfigError

PRIVATE_UMASK = 0o077
GROUP_UMASK = 0o027


def group_id(name: str) -> int:
    """The id of the group `name` (ACTIVITY_DATA_GROUP); ConfigError when the machine has no such group."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(
            f"ACTIVITY_DATA_GROUP={name!r} is not a group on this machine; create it (groupadd) or unset the "
            "variable to keep the dataset readable by its owner only"
        ) from None


def apply(group: str | None) -> None:
    """Set this process's file-creation mask: owner only, or owner and `group` reading."""
    os.umask(GROUP_UMASK if group else PRIVATE_UMASK)


def share_root(root: Path, group: str | None) -> None:
    """Give the data folder (made if missing) to `group` with the set-group-ID bit, so that everything created
    under it belongs to the group; without a group, nothing to do here (the mask keeps new files private)."""
    if group is None:
        return
    gid = group_id(group)
    root.mkdir(parents=True, exist_ok=True)  # made here, so that the group has it from its first file on
    if root.stat().st_gid != gid:
        os.chown(root, -1, gid)
    os.chmod(root, 0o2750)


def tighten(root: Path, group: str | None = None) -> int:
    """Every folder and file under `root` (and `root`) that is more open than the setting allows, closed: folders
    0700 and files 0600 (0750 and 0640 with `group`, given to it). Paths this user does not own are left as they
    are. Returns how many changed."""
    gid = group_id(group) if group else None
    changed = 0
    for path in [root, *sorted(root.rglob("*"))] if root.is_dir() else []:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
            continue
        folder = stat.S_ISDIR(info.st_mode)
        if gid is not None and info.st_gid != gid:
            os.chown(path, -1, gid)
            changed += 1
        mode = stat.S_IMODE(info.st_mode)
        # The owner's bits as they are (folders always searchable); the group's at most the setting's; none else.
        shared = (0o2050 if folder else 0o040) if gid is not None else 0
        target = (mode & 0o700) | (0o700 if folder else 0) | shared
        if target != mode:
            os.chmod(path, target)
            changed += 1
    return changed
