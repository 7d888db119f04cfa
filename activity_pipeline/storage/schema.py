"""The Parquet schema of a day of activities, and how a record becomes a row.

Typed columns are for SQL; `raw` keeps every record exactly as the API sent it (JSON text), so nothing
the columns leave out is lost, including keys that differ only in case. Records are decoded only as far as
the columns need (msgspec), and `raw` is built from the received bytes without re-encoding them.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from activity_pipeline.pagebody import PageBody

SCHEMA_VERSION = 1
TIMESTAMP = pa.timestamp("ms", tz="UTC")

# (name, arrow type, nullable, description): the documented schema, in column order.
COLUMNS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("id", pa.string(), False, "the record's `_id`"),
    ("timestamp", TIMESTAMP, False, "when the activity happened (`timestamp`, UTC)"),
    ("created", TIMESTAMP, True, "when the service saved it (`created`, UTC); later than timestamp"),
    ("app_id", pa.int32(), True, "`appId`: 11161 Office 365, 20893 Exchange Online, ..."),
    ("app_name", pa.string(), True, "`appName`"),
    ("event_type", pa.string(), True, "`eventTypeName`, e.g. EVENT_CATEGORY_FAILED_LOGIN"),
    ("event_type_value", pa.string(), True, "`eventTypeValue`, e.g. EVENT_AAD_LOGIN_FAILED"),
    ("action", pa.string(), True, "`mainInfo.rawOperationName`, the app's own operation name"),
    ("description", pa.string(), True, "`description`"),
    ("user_name", pa.string(), True, "`user.userName`"),
    ("ip_address", pa.string(), True, "`device.clientIP`"),
    ("country_code", pa.string(), True, "`location.countryCode`"),
    ("city", pa.string(), True, "`location.city`"),
    ("organization", pa.string(), True, "`location.organizationSearchable`, the IP's owner"),
    ("device_type", pa.string(), True, "`userAgent.deviceType`"),
    ("user_agent", pa.string(), True, "`device.userAgent`"),
    ("is_success", pa.bool_(), True, "`mainInfo.activityResult.isSuccess`; null when the app reports none"),
    ("is_admin", pa.bool_(), False, "administrative activity (`mainInfo.type` is admin)"),
    ("source", pa.int32(), True, "`source` (2 = app connector)"),
    ("raw", pa.string(), False, "the whole record exactly as received, JSON text"),
)

SCHEMA = pa.schema([pa.field(name, dtype, nullable=nullable) for name, dtype, nullable, _ in COLUMNS])
# Columns whose values repeat: dictionary-encoded. Unique ones (id, raw, ...) would only pay for a dictionary.
DICTIONARY_COLUMNS = [
    "app_name", "event_type", "event_type_value", "action", "description", "user_name", "ip_address",
    "country_code", "city", "organization", "device_type", "user_agent",
]  # fmt: skip


# gc=False: a day decodes millions of these (up to seven per record). Tracked by the garbage collector, they
# set off a collection every few hundred records: 1,883 collections and 0.56 s of a 200,000-record scan, all
# of it holding the GIL. They hold only strings, numbers and each other, so they can't form a reference cycle.
class _Device(msgspec.Struct, gc=False):
    clientIP: str | None = None
    userAgent: str | None = None


class _Location(msgspec.Struct, gc=False):
    countryCode: str | None = None
    city: str | None = None
    organizationSearchable: str | None = None


class _User(msgspec.Struct, gc=False):
    userName: str | None = None


class _UserAgent(msgspec.Struct, gc=False):
    deviceType: str | None = None


class _Result(msgspec.Struct, gc=False):
    isSuccess: bool | None = None


class _MainInfo(msgspec.Struct, gc=False):
    rawOperationName: str | None = None
    type: str | None = None
    activityResult: _Result | None = None


class ActivityRecord(msgspec.Struct, gc=False):
    """The fields the columns need; everything else stays in `raw`."""

    id: str | None = msgspec.field(default=None, name="_id")
    timestamp: int | None = None
    created: int | None = None
    appId: int | None = None
    appName: str | None = None
    eventTypeName: str | None = None
    eventTypeValue: str | None = None
    description: str | None = None
    device: _Device | None = None
    location: _Location | None = None
    user: _User | None = None
    userAgent: _UserAgent | None = None
    mainInfo: _MainInfo | None = None
    source: int | None = None


_typed = msgspec.json.Decoder(ActivityRecord).decode
_generic = msgspec.json.Decoder().decode


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _as(value: Any, kind: type) -> Any:
    if kind is int:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return None
    return value if isinstance(value, kind) else None


def _as_ms(value: Any) -> int | None:
    """Epoch milliseconds: a number, or a string of digits (as some exports send them)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return _as(value, int)


def decode_activity(raw: bytes | msgspec.Raw) -> ActivityRecord:
    """Decode what the columns need. A field of an unexpected type becomes null instead of failing the record, a
    time sent as a string of digits is read as the number, and a record whose bytes are not valid UTF-8 is read
    with each invalid byte as U+FFFD (its bytes as received are kept apart: `to_table`'s `received`).

    Raises msgspec.DecodeError (or ValueError) only when the record is not a JSON object at all.

    >>> decode_activity(b'{"_id": "a", "timestamp": 1, "appId": "not a number"}').appId is None
    True
    >>> decode_activity(b'{"_id": "a", "timestamp": "1764547200000"}').timestamp
    1764547200000
    >>> decode_activity(b'{"_id": "a", "timestamp": 1, "description": "caf\\xe9"}').description
    'caf\ufffd'
    """
    try:
        return _typed(raw)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        text = bytes(raw)
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            return decode_activity(text.decode("utf-8", "replace").encode())
        raise
    obj = _generic(raw)
    if not isinstance(obj, dict):
        raise ValueError("an activity must be a JSON object")
    result = _get(obj, "mainInfo", "activityResult")
    return ActivityRecord(
        id=_as(obj.get("_id"), str),
        timestamp=_as_ms(obj.get("timestamp")),
        created=_as_ms(obj.get("created")),
        appId=_as(obj.get("appId"), int),
        appName=_as(obj.get("appName"), str),
        eventTypeName=_as(obj.get("eventTypeName"), str),
        eventTypeValue=_as(obj.get("eventTypeValue"), str),
        description=_as(obj.get("description"), str),
        device=_Device(_as(_get(obj, "device", "clientIP"), str), _as(_get(obj, "device", "userAgent"), str)),
        location=_Location(
            _as(_get(obj, "location", "countryCode"), str),
            _as(_get(obj, "location", "city"), str),
            _as(_get(obj, "location", "organizationSearchable"), str),
        ),
        user=_User(_as(_get(obj, "user", "userName"), str)),
        userAgent=_UserAgent(_as(_get(obj, "userAgent", "deviceType"), str)),
        mainInfo=_MainInfo(
            _as(_get(obj, "mainInfo", "rawOperationName"), str),
            _as(_get(obj, "mainInfo", "type"), str),
            _Result(_as(_get(result, "isSuccess"), bool)) if isinstance(result, dict) else None,
        ),
        source=_as(obj.get("source"), int),
    )


def _raw_array(
    raws: Sequence[bytes | msgspec.Raw], body: PageBody | None = None, received: dict[int, bytes] | None = None
) -> pa.Array:
    """A string array of the records' bytes as received: never decoded, never re-encoded.

    When `body` is the writable page body the raws are views into (see `PageBody` for the contract), the
    records are moved together inside it and the array points into it, so a page is never held twice. The
    raws are spent then (they point at moved bytes). Otherwise the records are joined into a new buffer.

    A record whose bytes are not valid UTF-8 cannot be a string: with `received`, it is stored with each invalid
    byte as U+FFFD, and its bytes as received go into `received` (by row); without, ArrowInvalid is raised.
    """
    lengths = np.fromiter(map(len, raws), dtype=np.int64, count=len(raws))
    offsets = np.zeros(len(raws) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = _compact_in_place(raws, lengths, body)
    if data is None:
        data = pa.py_buffer(b"".join(raws))  # type: ignore[arg-type]
    if offsets[-1] < 2**31:  # always, for a 5000-record page; int32 offsets avoid a cast that copies
        array = pa.StringArray.from_buffers(len(raws), pa.py_buffer(offsets.astype(np.int32)), data)
    else:
        array = pa.LargeStringArray.from_buffers(len(raws), pa.py_buffer(offsets), data)
    try:
        array.validate(full=True)  # the API sends UTF-8; a record that is not is caught here
    except pa.ArrowInvalid:
        if received is None:
            raise
        array = _repaired(np.frombuffer(data, dtype=np.uint8), offsets, received)
    return array if array.type == pa.string() else array.cast(pa.string())


def _repaired(data: np.ndarray, offsets: np.ndarray, received: dict[int, bytes]) -> pa.Array:
    """The rows of `data` (cut at `offsets`) as strings, each invalid UTF-8 byte as U+FFFD; the rows that had
    any, as received, into `received`. A rare path: only pages with such a record take it."""
    texts = []
    for k in range(len(offsets) - 1):
        row = data[offsets[k] : offsets[k + 1]].tobytes()
        try:
            texts.append(row.decode("utf-8"))
        except UnicodeDecodeError:
            received[k] = row
            texts.append(row.decode("utf-8", "replace"))
    return pa.array(texts, pa.string())


def _compact_in_place(
    raws: Sequence[bytes | msgspec.Raw], lengths: np.ndarray, body: PageBody | None
) -> pa.Buffer | None:
    """Move the records to the front of their run in `body`, back to back; None unless they are views into it.

    Records lie in `body` in order and apart (a page's `data` array), so each moves left or stays, onto bytes
    that are separators or records already moved: nothing is overwritten before it is read.
    """
    if body is None or not body.writable or not raws:
        return None
    whole = pa.py_buffer(body.data)
    base = whole.address
    starts = np.fromiter((pa.py_buffer(r).address for r in raws), dtype=np.int64, count=len(raws)) - base
    ends = starts + lengths
    if starts[0] < 0 or ends[-1] > whole.size or bool((starts[1:] < ends[:-1]).any()):
        return None
    first = dst = int(starts[0])
    memmove = ctypes.memmove
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        if start != dst:
            memmove(base + dst, base + start, length)
        dst += length
    return whole.slice(first, dst - first)


def to_table(
    raws: Sequence[bytes | msgspec.Raw],
    rows: Sequence[ActivityRecord],
    body: PageBody | None = None,
    received: dict[str, bytes] | None = None,
) -> pa.Table:
    """Rows (decoded) and their raw bytes, same order, as a table of SCHEMA.

    With `body`, the page buffer the raws point into, the `raw` column reuses it (see `_raw_array`). With
    `received`, a record whose bytes are not valid UTF-8 is stored with U+FFFD for each invalid byte, and its
    bytes as received go into `received` by id (the day's manifest keeps them: `Manifest.received_bytes`).
    """
    by_row: dict[int, bytes] | None = {} if received is not None else None
    dev = [r.device for r in rows]
    loc = [r.location for r in rows]
    ua = [r.userAgent for r in rows]
    info = [r.mainInfo for r in rows]
    result = [i.activityResult if i else None for i in info]
    columns = [
        pa.array([r.id for r in rows], pa.string()),
        pa.array([r.timestamp for r in rows], pa.int64()).cast(TIMESTAMP),
        pa.array([r.created for r in rows], pa.int64()).cast(TIMESTAMP),
        pa.array([r.appId for r in rows], pa.int32()),
        pa.array([r.appName for r in rows], pa.string()),
        pa.array([r.eventTypeName for r in rows], pa.string()),
        pa.array([r.eventTypeValue for r in rows], pa.string()),
        pa.array([i.rawOperationName if i else None for i in info], pa.string()),
        pa.array([r.description for r in rows], pa.string()),
        pa.array([r.user.userName if r.user else None for r in rows], pa.string()),
        pa.array([d.clientIP if d else None for d in dev], pa.string()),
        pa.array([x.countryCode if x else None for x in loc], pa.string()),
        pa.array([x.city if x else None for x in loc], pa.string()),
        pa.array([x.organizationSearchable if x else None for x in loc], pa.string()),
        pa.array([x.deviceType if x else None for x in ua], pa.string()),
        pa.array([d.userAgent if d else None for d in dev], pa.string()),
        pa.array([x.isSuccess if x else None for x in result], pa.bool_()),
        pa.array([bool(i and i.type == "admin") for i in info], pa.bool_()),
        pa.array([r.source for r in rows], pa.int32()),
        _raw_array(raws, body, by_row),
    ]
    if by_row and received is not None:
        received.update({rows[k].id: raw for k, raw in by_row.items()})  # type: ignore[misc]
    return pa.Table.from_arrays(columns, schema=SCHEMA)
