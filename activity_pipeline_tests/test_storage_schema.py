"""The Parquet schema: typed columns decoded leniently, and `raw` kept byte for byte inside the page buffer."""

from __future__ import annotations

import gc

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from activity_pipeline.mdca import PageBody
from activity_pipeline.mdca.paging import decode_page
from activity_pipeline.storage.schema import _raw_array, decode_activity


@pytest.mark.parametrize("buffer_kind", ["numpy", "bytearray"])
@pytest.mark.parametrize("separator", [b",", b", ", b",\n    "])
def test_the_raw_column_reuses_the_page_buffer_and_keeps_each_record_byte_for_byte(separator, buffer_kind):
    records = [
        b'{"_id":"a","timestamp":1,"note":"caf\xc3\xa9"}',
        b'{"_id":"b","timestamp":2}',
        b'{"_id": "c", "timestamp": 3, "ID": "differs only in case"}',
        b'{"_id":"d","timestamp":4,"nested":{"x":[1,2,{"y":null}]}}',
    ]
    text = b'{"hasNext":false, "data":[' + separator.join(records) + b'], "total":4}'
    # The client reads a page into a numpy byte array.
    body = bytearray(text) if buffer_kind == "bytearray" else np.frombuffer(text, np.uint8).copy()
    page, buffer = decode_page(body)
    assert buffer.data is body and buffer.writable
    # As after dropping a duplicate: the kept records are not contiguous in the buffer.
    kept = [page.data[0], page.data[2], page.data[3]]
    array = _raw_array(kept, buffer)
    assert array.to_pylist() == [r.decode() for r in (records[0], records[2], records[3])]
    # No second copy: the values live inside the page buffer.
    start = pa.py_buffer(body).address
    assert start <= array.buffers()[2].address < start + len(text)
    # Records that are not views into a writable page (a copy, bytes) are joined instead, just as exactly.
    assert _raw_array([msgspec.Raw(r) for r in records], PageBody(text)).to_pylist() == [r.decode() for r in records]


def test_decoded_records_are_not_tracked_by_the_garbage_collector():
    # Tracked, the million small objects of a day set off thousands of collections that hold the GIL.
    records = [
        b'{"_id":"a","timestamp":1,"device":{"clientIP":"10.0.0.1"},"location":{"city":"Oslo"},"user":{},'
        b'"userAgent":{"deviceType":"PC"},"mainInfo":{"type":"admin","activityResult":{"isSuccess":true}}}',
        b'{"_id":"b","timestamp":"2","appId":"not a number","mainInfo":{"activityResult":{"isSuccess":1}}}',
    ]
    for raw in records:
        row = decode_activity(raw)
        parts = [row, row.device, row.location, row.user, row.userAgent, row.mainInfo]
        parts.append(row.mainInfo.activityResult if row.mainInfo else None)
        assert [p for p in parts if p is not None and gc.is_tracked(p)] == []
