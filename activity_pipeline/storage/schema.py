"""The Parquet schema of a day of activities, and how a record becomes a row.

Typed columns are for SQL; `raw` keeps every record exactly as the API sent it (JSON text), so nothing
the columns leave out is lost, including keys that differ only in case. Records are decoded only as far as
the columns need (msgspec), and `raw` is built from the received bytes without re-encoding them.

Every typed column is derived from `raw` alone (`derive_table`), so a day stored with an older version of the
columns is upgraded from its own `raw`, never from the API (`storage.compaction`, `make upgrade`). Each column
names the version that added it; a file of version N holds exactly the columns of `schema_of(N)`.

    version 1   the first columns (user_name from user.userName only; is_admin from mainInfo.type)
    version 2   identity as the service writes it (user_name from failedUserData, the resolved actor, ...),
                account_object_id, account_display_name, is_external, failure_reason, sign_in_error_code,
                ip_category, ip_tags, region, is_anonymous_proxy, os_platform, objects; is_admin also from
                Office 365's UserType
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Sequence
from operator import attrgetter
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from activity_pipeline.pagebody import PageBody
from activity_pipeline.storage.records import (
    OBJECT_KINDS,
    ActivityRecord,
    decode_activity,
    identity,
    ip_category,
    is_admin,
    number,
    text,
)

__all__ = ["ActivityRecord", "decode_activity"]

SCHEMA_VERSION = 2
TIMESTAMP = pa.timestamp("ms", tz="UTC")
# One thing a record involves (`mainInfo.eventObjects[]`), typed.
OBJECT = pa.struct(
    [
        pa.field("obj_type", pa.int32()),
        pa.field("kind", pa.string()),
        pa.field("service_type", pa.string()),
        pa.field("name", pa.string()),
        pa.field("id", pa.string()),
        pa.field("value", pa.string()),
        pa.field("role", pa.int32()),
    ]
)


class Column(NamedTuple):
    name: str
    type: pa.DataType
    nullable: bool
    description: str
    since: int = 1


# The documented schema, in column order (docs/dataset.md gives each column's source paths and precedence).
COLUMNS: tuple[Column, ...] = (
    Column("id", pa.string(), False, "the record's `_id`"),
    Column("timestamp", TIMESTAMP, False, "when the activity happened (`timestamp`, UTC)"),
    Column("created", TIMESTAMP, True, "when the service saved it (`created`, UTC); later than timestamp"),
    Column("app_id", pa.int32(), True, "`appId`: 11161 Office 365, 20893 Exchange Online, ..."),
    Column("app_name", pa.string(), True, "`appName`"),
    Column("event_type", pa.string(), True, "`eventTypeName`, e.g. EVENT_CATEGORY_FAILED_LOGIN"),
    Column("event_type_value", pa.string(), True, "`eventTypeValue`, e.g. EVENT_AAD_LOGIN_FAILED"),
    Column("action", pa.string(), True, "`mainInfo.rawOperationName`, the app's own operation name"),
    Column("description", pa.string(), True, "`description`"),
    Column("user_name", pa.string(), True, "the actor's UPN: `user.userName`, else `failedUserData.userName`, ..."),
    Column("ip_address", pa.string(), True, "`device.clientIP`"),
    Column("country_code", pa.string(), True, "`location.countryCode`"),
    Column("city", pa.string(), True, "`location.city`"),
    Column("organization", pa.string(), True, "`location.organizationSearchable`, the IP's owner"),
    Column("device_type", pa.string(), True, "`userAgent.deviceType`"),
    Column("user_agent", pa.string(), True, "`device.userAgent`"),
    Column("is_success", pa.bool_(), True, "`mainInfo.activityResult.isSuccess`; null when the app reports none"),
    Column("is_admin", pa.bool_(), False, "administrative activity: `mainInfo.type` admin, or Office 365's UserType"),
    Column("source", pa.int32(), True, "`source` (0 access control, 1 session control, 2 app connector)"),
    Column("account_object_id", pa.string(), True, "the actor's Entra object id (a GUID), or null", 2),
    Column("account_display_name", pa.string(), True, "the actor's display name, when the record has one", 2),
    Column("is_external", pa.bool_(), True, "a guest account (`#EXT#` in its UPN); null without a UPN", 2),
    Column("failure_reason", pa.string(), True, "`mainInfo.activityResult.message` of a failed activity", 2),
    Column("sign_in_error_code", pa.int32(), True, "`rawDataJson.LoginErrorCode` (Entra ID, e.g. 50126)", 2),
    Column("ip_category", pa.string(), True, "`location.categoryValue`; the strings null and NONE are null", 2),
    Column("ip_tags", pa.list_(pa.string()), True, "`location.ipTags`: the IP's tag ids", 2),
    Column("region", pa.string(), True, "`location.region`", 2),
    Column("is_anonymous_proxy", pa.bool_(), True, "`location.anonymousProxy`", 2),
    Column("os_platform", pa.string(), True, "`userAgent.operatingSystem.name`", 2),
    Column("objects", pa.list_(OBJECT), True, "`mainInfo.eventObjects`: what the activity involved", 2),
    Column("raw", pa.string(), False, "the whole record exactly as received, JSON text"),
)


def schema_of(version: int) -> pa.Schema:
    """The Parquet schema of files written with version `version` of the typed columns."""
    if not 1 <= version <= SCHEMA_VERSION:
        raise ValueError(f"schema version {version} is not one this code knows (1 to {SCHEMA_VERSION})")
    return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in COLUMNS if c.since <= version])


SCHEMA = schema_of(SCHEMA_VERSION)
SCHEMAS = {v: schema_of(v) for v in range(1, SCHEMA_VERSION + 1)}


def version_of(schema: pa.Schema) -> int | None:
    """The version whose schema `schema` is (metadata aside); None for none of them."""
    plain = schema.remove_metadata()
    return next((v for v, s in SCHEMAS.items() if plain.equals(s)), None)


# Columns whose values repeat: dictionary-encoded. Unique ones (id, raw, ...) would only pay for a dictionary.
DICTIONARY_COLUMNS = [
    "app_name", "event_type", "event_type_value", "action", "description", "user_name", "ip_address",
    "country_code", "city", "organization", "device_type", "user_agent", "account_object_id",
    "account_display_name", "failure_reason", "ip_category", "region", "os_platform",
]  # fmt: skip


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


def _array(values: Sequence[Any], kind: pa.DataType, convert: Any) -> pa.Array:
    """`values` as an array of `kind`; where some are of another type (an id sent as a number, a role as a string),
    each is converted by `convert` first (None where it cannot be)."""
    try:
        return pa.array(values, kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([convert(v) for v in values], kind)


# Each objType's kind by number (OBJECT_KINDS), null for the numbers without one.
_KINDS = pa.array([OBJECT_KINDS.get(t) for t in range(max(OBJECT_KINDS) + 1)], pa.string())


def _objects(rows: Sequence[ActivityRecord]) -> pa.Array:
    """`mainInfo.eventObjects` of each row as a list of OBJECT (null for a record without any)."""
    lists = [r.mainInfo.eventObjects if r.mainInfo is not None else None for r in rows]
    lengths = np.fromiter((len(x) if x else 0 for x in lists), dtype=np.int32, count=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = [o for objects in lists if objects for o in objects]
    types, names, ids, values, roles, services = (
        list(map(attrgetter(field), flat)) for field in ("objType", "name", "id", "value", "role", "serviceObjectType")
    )
    obj_type = _array(types, pa.int32(), _int32)
    known = pc.and_kleene(pc.greater_equal(obj_type, 0), pc.less(obj_type, len(_KINDS)))
    kinds = pc.take(_KINDS, pc.if_else(known, obj_type, pa.scalar(None, pa.int32())))
    children = [obj_type, kinds,
                pa.array(services, pa.string()), pa.array(names, pa.string()), _array(ids, pa.string(), text),
                _array(values, pa.string(), text), _array(roles, pa.int32(), _int32)]  # fmt: skip
    items = pa.StructArray.from_arrays(children, fields=list(OBJECT))
    mask = pa.array([x is None for x in lists], pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets), items, type=pa.list_(OBJECT), mask=mask)


def _int32(value: Any) -> int | None:
    n = number(value)
    return n if n is not None and -(2**31) <= n < 2**31 else None


def typed_columns(rows: Sequence[ActivityRecord]) -> list[pa.Array]:
    """The typed columns of SCHEMA (all but `id` and `raw`), in order, for decoded rows."""
    dev = [r.device for r in rows]
    loc = [r.location for r in rows]
    ua = [r.userAgent for r in rows]
    info = [r.mainInfo for r in rows]
    result = [i.activityResult if i else None for i in info]
    who = [identity(r) for r in rows]
    raw = [r.rawDataJson for r in rows]
    return [
        pa.array([r.timestamp for r in rows], pa.int64()).cast(TIMESTAMP),
        pa.array([r.created for r in rows], pa.int64()).cast(TIMESTAMP),
        pa.array([r.appId for r in rows], pa.int32()),
        pa.array([r.appName for r in rows], pa.string()),
        pa.array([r.eventTypeName for r in rows], pa.string()),
        pa.array([r.eventTypeValue for r in rows], pa.string()),
        pa.array([i.rawOperationName if i else None for i in info], pa.string()),
        pa.array([r.description for r in rows], pa.string()),
        pa.array([w.user_name for w in who], pa.string()),
        pa.array([d.clientIP if d else None for d in dev], pa.string()),
        pa.array([x.countryCode if x else None for x in loc], pa.string()),
        pa.array([x.city if x else None for x in loc], pa.string()),
        pa.array([x.organizationSearchable if x else None for x in loc], pa.string()),
        pa.array([x.deviceType if x else None for x in ua], pa.string()),
        pa.array([d.userAgent if d else None for d in dev], pa.string()),
        pa.array([x.isSuccess if x else None for x in result], pa.bool_()),
        pa.array([is_admin(r) for r in rows], pa.bool_()),
        pa.array([r.source for r in rows], pa.int32()),
        pa.array([w.object_id for w in who], pa.string()),
        pa.array([w.display_name for w in who], pa.string()),
        pa.array([("#ext#" in w.user_name.lower()) if w.user_name else None for w in who], pa.bool_()),
        pa.array([x.message if x is not None and x.isSuccess is False else None for x in result], pa.string()),
        pa.array([_int32(x.LoginErrorCode) if x is not None else None for x in raw], pa.int32()),
        pa.array([ip_category(x.categoryValue) if x else None for x in loc], pa.string()),
        pa.array([x.ipTags if x else None for x in loc], pa.list_(pa.string())),
        pa.array([x.region if x else None for x in loc], pa.string()),
        pa.array([x.anonymousProxy if x else None for x in loc], pa.bool_()),
        pa.array([x.operatingSystem.name if x and x.operatingSystem else None for x in ua], pa.string()),
        _objects(rows),
    ]


# Records decoded at a time into typed columns: a scan's page (5,000) decoded whole would hold ~15 MB of Python
# objects per page in flight; a chunk holds a fifth of that, and the columns are built a chunk at a time.
DECODE_ROWS = 1000


def to_table(
    raws: Sequence[bytes | msgspec.Raw],
    rows: Sequence[ActivityRecord] | None = None,
    body: PageBody | None = None,
    received: dict[str, bytes] | None = None,
) -> pa.Table:
    """Records (their raw bytes; and decoded, same order, or None to decode them here, DECODE_ROWS at a time) as a
    table of SCHEMA.

    With `body`, the page buffer the raws point into, the `raw` column reuses it (see `_raw_array`). With
    `received`, a record whose bytes are not valid UTF-8 is stored with U+FFFD for each invalid byte, and its
    bytes as received go into `received` by id (the day's manifest keeps them: `Manifest.received_bytes`).
    """
    ids, typed = ([r.id for r in rows], typed_columns(rows)) if rows is not None else _decoded(raws)
    by_row: dict[int, bytes] | None = {} if received is not None else None
    columns = [pa.array(ids, pa.string()), *typed, _raw_array(raws, body, by_row)]
    if by_row and received is not None:
        received.update({ids[k]: raw for k, raw in by_row.items()})  # type: ignore[misc]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _records(raw: pa.Array) -> list[memoryview]:
    """Each record's bytes in a string array, as views into its buffer (no copies)."""
    if raw.type != pa.string():
        raw = raw.cast(pa.string())
    _, offsets, data = raw.buffers()
    ends = np.frombuffer(offsets, dtype=np.int32)[raw.offset : raw.offset + len(raw) + 1].tolist()
    view = memoryview(data)
    return [view[a:b] for a, b in itertools.pairwise(ends)]


# Rows decoded at a time by `derive_table`: a scan page's worth, so that an upgrade's memory is a page's.
DERIVE_ROWS = 5000


def _decoded(records: Sequence[bytes | msgspec.Raw | memoryview]) -> tuple[list[str | None], list[pa.Array]]:
    """The records' ids and typed columns (SCHEMA's, but `id` and `raw`), decoded DECODE_ROWS at a time."""
    ids: list[str | None] = []
    chunks = []
    for k in range(0, len(records), DECODE_ROWS):
        decoded = [decode_activity(record) for record in records[k : k + DECODE_ROWS]]  # type: ignore[arg-type]
        ids += [r.id for r in decoded]
        chunks.append(typed_columns(decoded))
    if not chunks:
        return ids, typed_columns([])
    return ids, [pa.concat_arrays(parts) for parts in zip(*chunks, strict=True)]


def derive_table(table: pa.Table) -> pa.Table:
    """A table of stored rows (any version: only `id` and `raw` are read) with every typed column derived again
    from `raw`, as SCHEMA. `id` and `raw` are the same values, untouched: an upgrade never changes them."""
    parts = []
    for batch in table.select(["id", "raw"]).to_batches(max_chunksize=DECODE_ROWS):
        _, typed = _decoded(_records(batch.column(1)))
        parts.append(pa.Table.from_arrays([batch.column(0), *typed, batch.column(1)], schema=SCHEMA))
    return pa.concat_tables(parts) if parts else SCHEMA.empty_table()
