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


def _published() -> list[bytes]:
    """The real published records (fixtures), each as the JSON text a page carries."""
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).parent / "fixtures" / "sample-activities.json").read_text())
    return [json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode() for r in data["activities"]]


def test_real_published_records_keep_their_times_and_bytes_exactly():
    import json

    from activity_pipeline.storage.schema import to_table

    raws = [msgspec.Raw(r) for r in _published()]
    rows = [decode_activity(r) for r in raws]
    received: dict[str, bytes] = {}
    table = to_table(raws, rows, None, received)
    for k, text in enumerate(_published()):
        record = json.loads(text)
        assert rows[k].id == record["_id"] and rows[k].timestamp == record["timestamp"]
        assert rows[k].created == record["created"]
        assert table.column("raw")[k].as_py().encode() == text, "raw is the bytes as received"
    assert received == {}, "valid UTF-8: nothing kept apart"


def test_a_real_record_with_bytes_that_are_not_utf8_is_stored_and_its_bytes_kept():
    import json

    from activity_pipeline.storage.schema import to_table

    text = _published()[0]
    record = json.loads(text)
    # Its description with a Latin-1 "é" in place of its first character: what a misencoding connector sends.
    broken = text.replace(record["description"][:1].encode(), b"\xe9", 1)
    row = decode_activity(msgspec.Raw(broken))
    received: dict[str, bytes] = {}
    table = to_table([msgspec.Raw(broken)], [row], None, received)
    assert row.id == record["_id"] and row.timestamp == record["timestamp"] and row.created == record["created"]
    assert row.user is not None and row.user.userName == record["user"]["userName"]
    assert received == {record["_id"]: broken}
    assert table.column("raw")[0].as_py() == broken.decode("utf-8", "replace")
