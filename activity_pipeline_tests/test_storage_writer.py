"""The day writer: staged files, swapped in whole, refusing late writes."""

from __future__ import annotations

import datetime as dt

import pytest

from activity_pipeline.storage.schema import SCHEMA
from activity_pipeline_testing.helpers import tenant_data


def test_a_page_written_after_the_days_files_are_closed_fails_instead_of_writing(tmp_path):
    with tenant_data(tmp_path).writer(dt.date(2026, 11, 24)) as writer:
        writer.commit()
        with pytest.raises(RuntimeError, match="already closed"):
            writer.write(0, SCHEMA.empty_table())
        with pytest.raises(RuntimeError, match="already closed"):
            writer.quarantine([b'{"no_id": 1}'])


def test_a_long_slice_goes_on_in_a_new_file_every_file_row_groups_pages(tmp_path):
    import json

    import msgspec
    import pyarrow.parquet as pq

    from activity_pipeline.storage.schema import decode_activity, to_table
    from activity_pipeline.storage.staging import FILE_ROW_GROUPS

    day = dt.date(2026, 11, 24)
    start = int(dt.datetime(2026, 11, 24, tzinfo=dt.UTC).timestamp() * 1000)
    pages = FILE_ROW_GROUPS * 2 + 3
    store = tenant_data(tmp_path)
    with store.writer(day) as writer:
        for k in range(pages):
            raws = [msgspec.Raw(json.dumps({"_id": f"a{k}-{j}", "timestamp": start + k * 10 + j}).encode())
                    for j in range(3)]  # fmt: skip
            writer.write(start, to_table(raws, [decode_activity(r) for r in raws]))
        writer.close_slice(start)
        writer.commit()
    files = sorted(store.day_location(day).glob("*.parquet"))
    assert sorted(pq.ParquetFile(f).metadata.num_row_groups for f in files) == [3, FILE_ROW_GROUPS, FILE_ROW_GROUPS]
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == pages * 3 == store.manifest(day).rows
