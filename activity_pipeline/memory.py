"""How a scan's process keeps its memory to the pages in flight: glibc's and Arrow's allocators told to hand back
what a page used, and the pages a day may hold at once. Used by `ingest`."""

from __future__ import annotations

import contextlib
import ctypes

import pyarrow as pa

from activity_pipeline.mdca.scan import PAGES_IN_FLIGHT

_M_MMAP_THRESHOLD = -3


def return_page_buffers_to_the_os() -> None:
    """Have glibc mmap blocks of 512 KiB and more (and unmap them on free) instead of reusing per-thread arenas.

    Pages are ~17 MB buffers (mdca/client.py reads each into one numpy array), allocated and freed several
    times a second by worker threads. glibc's adaptive threshold moves such blocks into per-thread arenas
    after the first free, and those arenas keep their high-water mark: peak RSS then grows with the number of
    threads rather than with the pages in flight. A fixed threshold keeps them out (measured on a
    1,000,000-record day: 4 MiB -> 512 KiB took about 15 MiB off the peak). Elsewhere than glibc this does
    nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 512 << 10)
    # Arrow's jemalloc pool hands freed column buffers back sooner than its default mimalloc. The package
    # chooses it at import (activity_pipeline/__init__.py), which also covers Parquet's writer; this covers a
    # process that imported pyarrow first. Not every pyarrow build has it.
    with contextlib.suppress(NotImplementedError, AttributeError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())


def release_freed_memory() -> None:
    """Hand what the scan freed back to the OS before the checks run in the same process: Arrow's pool keeps
    freed buffers for reuse, and glibc the top of its heaps. Measured on a 10,000,000-activity day: without this
    the checks' DuckDB queries grew the run process 36 MiB above the scan's peak."""
    with contextlib.suppress(AttributeError, NotImplementedError):
        pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# A day this large holds one page fewer in flight (see `pages_in_flight`).
LARGE_DAY = 3_000_000


def pages_in_flight(source_total: int) -> int:
    """How many pages the scan of a day of `source_total` records may hold at once.

    A large day is scanned in more slices (work-stealing splits them), each with its open file and its recent
    ids, so its working set is larger: a 10,000,000-activity day's run process (`dg launch`, no rate limit)
    peaked at 411 MiB with 4 pages in flight, 369 MiB with 3, its scan 4 % slower (148 s, 155 s). With the
    records as the service writes them (a fifth larger than the demo's first ones) and schema version 2's
    columns, 3 pages took it to 442 MiB: a large day holds 2. Smaller days keep 4, what 4 slices need at high
    latency; at the service's 30 requests a minute one slice is enough.
    """
    return PAGES_IN_FLIGHT - 2 if source_total >= LARGE_DAY else PAGES_IN_FLIGHT
