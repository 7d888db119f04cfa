"""activity_pipeline: the Defender for Cloud Apps activity log as daily Parquet, kept beyond 180 days."""

import os
import sys

# Arrow picks its allocator once, when pyarrow loads, and Parquet's writer keeps that pool whatever
# `pyarrow.set_memory_pool` says later. Its default (mimalloc) reserves a 1 GiB arena and holds ~20 MiB more
# per process than jemalloc, which hands freed pages back at once. Decided here, before anything imports
# pyarrow; a value the user set wins. (Linux wheels ship jemalloc; elsewhere Arrow's default stays.)
if sys.platform == "linux" and "pyarrow" not in sys.modules:
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
