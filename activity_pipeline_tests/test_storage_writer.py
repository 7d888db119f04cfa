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
