"""Storage's errors, each one a thing no retry fixes: the message says what to do instead."""

from __future__ import annotations

# What mends a day whose files are damaged: a new version from the source, not built on the stored files.
FULL_RESCAN_HINT = "run the day again with the tag activity_pipeline/full_rescan=true, which scans it anew"


class StorageLocationError(RuntimeError):
    """Where the dataset should go is unusable: a file where a folder should be, a bucket that does not exist,
    credentials the storage service refuses. No retry fixes it; the message says what to change."""


class DayLockedError(RuntimeError):
    """Another process is writing the same day."""


class DamagedDayError(RuntimeError):
    """A stored day's file cannot be read (a damaged footer, a page that does not decompress)."""


class DayChangedError(RuntimeError):
    """Another run replaced a day while a top-up of it ran (object storage, where day locks are per machine).
    A retry tops up the new version."""


class UnsafeVersionError(RuntimeError):
    """A new version of a day failed the check made before every commit (an id twice, a row outside the day): it
    was kept aside, never swapped in. The stored day is unchanged.

    `path`: where the refused files are, for a person to look at."""

    def __init__(self, message: str, path: object) -> None:
        super().__init__(message)
        self.path = path
