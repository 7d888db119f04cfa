"""Open the dataset the configuration names: the one place that chooses a storage backend.

>>> open_dataset(Path("/srv/mdca")).location
'/srv/mdca'
>>> type(open_dataset(Path("/srv/mdca"), "s3://bucket/mdca")).__name__
'LakeDataset'
"""

from __future__ import annotations

from pathlib import Path

from activity_pipeline.storage.core import Dataset
from activity_pipeline.storage.delta import DataUrlError, parse_data_url, storage_problem
from activity_pipeline.storage.lake import LakeDataset
from activity_pipeline.storage.local import LocalDataset

__all__ = ["DataUrlError", "open_copy", "open_dataset", "parse_data_url", "storage_problem"]


def open_dataset(data_dir: Path | str, data_url: str | None = None) -> Dataset:
    """The dataset: Parquet folders under `data_dir` (`ACTIVITY_DATA_DIR`); or, with `data_url`
    (`ACTIVITY_DATA_URL`, checked by `storage.delta.parse_data_url`), a Delta table there, `data_dir` then keeping
    work in progress and the DuckDB file."""
    if data_url:
        return LakeDataset(Path(data_dir), data_url)
    return LocalDataset(Path(data_dir))


def open_copy(where: str, work_dir: Path | str) -> Dataset:
    """Another dataset, read only (`keep_days.copied_to`): a folder, or an object-storage URL whose local work,
    if any, goes under `work_dir` (this deployment's data folder)."""
    if "://" in where:
        return LakeDataset(Path(work_dir), where)
    return LocalDataset(Path(where))
