"""Render demo records to JSON bytes, shaped like the records the Activities API returns
(https://learn.microsoft.com/en-us/defender-cloud-apps/api-activities; two real ones are in the tests' fixtures).

Each event kind has one precompiled `%`-template, so rendering a record is one dict and one string
format: a few microseconds, which keeps the server far from being a benchmark's bottleneck.
"""

from __future__ import annotations

import json
import operator
import re
from typing import Any

import numpy as np

from activity_pipeline.demo_tenant.catalog import APPS, DEVICES, IP_CATEGORIES, PLACES, App, Event
from activity_pipeline.demo_tenant.data import AAD_TENANT_ID, EVENTS, TENANT_ID, Columns, Directory


class _Slot:
    """A per-record value in a template. `raw` slots are inserted as JSON, the others inside a string."""

    def __init__(self, name: str, raw: bool = False) -> None:
        self.name, self.raw = name, raw


def _raw(name: str) -> _Slot:
    return _Slot(name, raw=True)


def _text(name: str) -> _Slot:
    return _Slot(name)


def _compile(structure: dict[str, Any]) -> str:
    """Turn a structure holding `_Slot`s into a `%(name)s` template of compact JSON."""
    slots: dict[str, _Slot] = {}

    def mark(value: Any) -> Any:
        if isinstance(value, _Slot):
            slots[value.name] = value
            return f"\x00{value.name}\x00"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(structure), separators=(",", ":"), ensure_ascii=False).replace("%", "%%")

    def sub(m: re.Match[str]) -> str:
        return f"%({m.group(1)})s"

    text = re.sub(r'"\\u0000(\w+)\\u0000"', lambda m: sub(m) if slots[m.group(1)].raw else f'"{sub(m)}"', text)
    return re.sub(r"\\u0000(\w+)\\u0000", sub, text)


def _raw_data(app: App, event: Event) -> dict[str, Any]:
    """The app's own event, which differs per app; some carry keys that differ only in case."""
    op = event.operation
    if app.raw_style == "o365":
        return {
            "CreationTime": _text("iso7"),
            "Id": _text("uuid"),
            "Operation": op,
            "OrganizationId": AAD_TENANT_ID,
            "RecordType": 6 if app.app_id in (20892, 15600) else 2,
            "UserKey": _text("uuid2"),
            "UserType": 2 if event.is_admin else 0,
            "Version": 1,
            "Workload": app.name.removeprefix("Microsoft ").split(" ")[0],
            "ClientIP": _text("ip"),
            "ObjectId": _text("object"),
            "UserId": _text("user"),
        }
    if app.raw_style == "aad_login":
        return {
            "ApplicationId": "c61faf03-1cbc-4409-94a9-ae1497de0883",
            "ApplicationName": "EWS O365",
            "CorrelationId": _text("uuid"),
            "DataSource": None,
            "DeviceInfo": _text("ua"),
            "EventType": "MCASLoginEvent",
            "IpAddress": _text("ip"),
            "IsInteractive": None,
            "LoginErrorCode": 0 if event.success is not False else 50126,
            "LoginStatus": "Failure" if event.success is False else "Success",
            "MfaRequired": False,
            "RequestId": _text("uuid2"),
            "TenantId": AAD_TENANT_ID,
            "TimeStamp": _text("iso7"),
            "Upn": _text("user"),
            "UserName": "",
        }
    if app.raw_style == "azure":
        return {
            "Level": "Informational",
            "level": "Information",
            "caller": _text("user"),
            "callerIpAddress": _text("ip"),
            "correlationId": _text("uuid"),
            "eventTimestamp": _text("iso7"),
            "operationName": {"value": op, "localizedValue": event.description},
            "resourceProviderName": {"value": op.split("/")[0]},
            "status": {"value": "Succeeded"},
            "subscriptionId": "3e8d4a1c-0b6f-4d6b-9a57-1d2c3b4a5f60",
        }
    if app.raw_style == "aws":
        return {
            "eventVersion": "1.09",
            "eventName": op,
            "EventName": op.upper(),
            "eventSource": "signin.amazonaws.com" if event.success is not None else "ec2.amazonaws.com",
            "eventTime": _text("iso"),
            "awsRegion": "us-east-1",
            "sourceIPAddress": _text("ip"),
            "userAgent": _text("ua"),
            "userIdentity": {"type": "IAMUser", "userName": _text("user"), "accountId": "123456789012"},
            "eventID": _text("uuid"),
            "errorMessage": "Failed authentication" if event.success is False else None,
            "responseElements": None,
        }
    if app.raw_style == "google":
        return {
            "kind": "admin#reports#activity",
            "id": {"time": _text("iso"), "uniqueQualifier": _raw("ms"), "applicationName": "login"},
            "actor": {"email": _text("user"), "profileId": _text("uuid2")},
            "ipAddress": _text("ip"),
            "events": [{"type": "login", "name": op, "parameters": [{"name": "login_type", "value": "saml"}]}],
        }
    if app.raw_style == "okta":
        return {
            "uuid": _text("uuid"),
            "published": _text("iso"),
            "eventType": op,
            "displayMessage": event.description,
            "DisplayMessage": event.description.upper(),
            "actor": {"alternateId": _text("user"), "type": "User"},
            "client": {"ipAddress": _text("ip"), "userAgent": {"rawUserAgent": _text("ua")}},
            "outcome": {"result": "FAILURE" if event.success is False else "SUCCESS"},
            "severity": "WARN" if event.success is False else "INFO",
        }
    return {
        "eventName": op,
        "EventName": op,
        "action": event.description,
        "user": _text("user"),
        "sourceIp": _text("ip"),
        "time": _text("iso"),
        "requestId": _text("uuid"),
    }


def _record(app: App, event: Event) -> dict[str, Any]:
    actor = {
        "objType": 21,
        "role": 4,
        "tags": [],
        "name": _text("user"),
        "instanceId": 0,
        "resolved": True,
        "saasId": app.app_id,
        "id": _text("user"),
        "link": -162371649,
    }
    main_info: dict[str, Any] = {
        "eventObjects": [
            {
                "objType": 1,
                "role": 3,
                "tags": [],
                "name": _text("object"),
                "id": _text("uuid2"),
                "serviceObjectType": event.description,
            },
            actor,
        ],
        "rawOperationName": event.operation,
        "prettyOperationName": event.operation,
        "type": event.info_type,
    }
    if event.success is not None:
        result: dict[str, Any] = {"isSuccess": event.success}
        if event.success is False:
            result["message"] = event.failure_message
        main_info["activityResult"] = result
    record: dict[str, Any] = {
        "_id": _text("id"),
        "tenantId": TENANT_ID,
        "aadTenantId": AAD_TENANT_ID,
        "appId": app.app_id,
        "saasId": app.app_id,
        "timestamp": _raw("ts"),
        "timestampRaw": _raw("ts"),
        "instantiation": _raw("inst"),
        "instantiationRaw": _raw("inst"),
        "created": _raw("created"),
        "createdRaw": _raw("created"),
        "eventType": event.event_type,
        "eventTypeValue": event.type_value,
        "eventRouting": {"scubaUnpacker": False, "lograbber": True, "auditing": True},
        "device": {"clientIP": _text("ip"), "userAgent": _text("ua"), "countryCode": _text("cc")},
        "location": _raw("location"),
        "user": {"userName": _text("user"), "userTags": ["5f01dbbc68df27c17aa6ca81"]},
        "userAgent": _raw("useragent"),
        "internals": {"otherIPs": [_text("ip")]},
        "mainInfo": main_info,
        "confidenceLevel": 30 if event.success is not None else 20,
        "source": app.source,
        "lograbberService": {"o365EventGrabber": app.raw_style == "o365", "gediEvent": True},
        "srcAppId": 11161 if app.raw_style in ("o365", "aad_login") else app.app_id,
        "collected": {"lograbber": {"correlationId": _text("uuid"), "enqueueTime": _raw("inst")}},
        "rawDataJson": _raw_data(app, event),
        "resolvedActor": {
            "id": _text("user"),
            "saasId": str(app.app_id),
            "instanceId": "0",
            "tags": [],
            "objType": "21",
            "name": _text("user"),
            "role": "4",
            "governable": False,
        },
        "uid": _text("id"),
        "appName": app.name,
        "eventTypeName": event.type_name,
        "classifications": [event.classification],
        "entityData": {
            "0": {
                "displayName": _text("user"),
                "id": {"id": _text("user"), "saas": app.app_id, "inst": 0},
                "resolved": True,
            },
            "1": {
                "displayName": _text("object"),
                "id": {"id": _text("uuid2"), "saas": app.app_id, "inst": 0},
                "resolved": False,
            }
            if event.success is None
            else None,
            "2": None,
        },
        "description_id": f"EVENT_DESCRIPTION_{event.type_name.removeprefix('EVENT_CATEGORY_')}",
        "description_metadata": {"event_category": event.description, "colon": "", "dash": ""},
        "description": event.description
        + (f" (Failure message: {event.failure_message})" if event.success is False else ""),
        "genericEventType": event.generic,
        "severity": "MEDIUM" if event.is_admin else "INFO",
    }
    if event.success is False:
        record["failedUserData"] = {"userName": _text("user")}
    return record


class _Template:
    """A `%(name)s` template made positional: the slots' values are picked from a dict in C, in slot order.

    Formatting a 2 KB template with 30 named slots from a dict took twice as long as with a tuple.
    """

    def __init__(self, named: str) -> None:
        names, parts = [], []
        for part in re.split(r"(%%|%\(\w+\)s)", named):  # "%%" stays a literal percent sign
            slot = re.fullmatch(r"%\((\w+)\)s", part)
            if slot:
                names.append(slot.group(1))
            parts.append("%s" if slot else part)
        self.text = "".join(parts)
        self.pick = operator.itemgetter(*names)

    def fill(self, values: dict[str, Any]) -> str:
        return self.text % self.pick(values)


TEMPLATES: tuple[_Template, ...] = tuple(
    _Template(_compile(_record(APPS[app_index], event))) for app_index, event in EVENTS
)


def _location(place: int, category: int) -> str:
    cc, city, region, org, lat, lon, _ = PLACES[place]
    cat, cat_value = IP_CATEGORIES[category]
    return json.dumps(
        {
            "countryCode": cc,
            "city": city,
            "region": region,
            "longitude": lon,
            "latitude": lat,
            "organizationSearchable": org,
            "anonymousProxy": cat == 3,
            "isSatelliteProvider": False,
            "category": cat,
            "categoryValue": cat_value,
        },
        separators=(",", ":"),
    )


def _user_agent(device: int) -> str:
    _ua, family, name, os_name, os_family, device_type, browser, kind = DEVICES[device]
    return json.dumps(
        {
            "family": family,
            "name": name,
            "operatingSystem": {"name": os_name, "family": os_family},
            "type": kind,
            "typeName": kind,
            "deviceType": device_type,
            "nativeBrowser": kind == "Application",
            "os": os_family.upper(),
            "browser": browser,
        },
        separators=(",", ":"),
    )


class Renderer:
    """Renders records of one tenant by row number."""

    def __init__(self, directory: Directory, cols: Columns) -> None:
        self.cols = cols
        self.users = directory.users
        self.ips = directory.ips
        self.ip_cc = tuple(PLACES[int(p)][0] for p in directory.ip_place)
        self.locations = tuple(
            _location(int(p), int(c)) for p, c in zip(directory.ip_place, directory.ip_category, strict=True)
        )
        self.user_agents = tuple(_user_agent(d) for d in range(len(DEVICES)))
        self.ua_strings = tuple(d[0] for d in DEVICES)
        for value in (*self.users, *self.ips):
            if '"' in value or "\\" in value:
                raise ValueError(f"demo vocabulary must not need JSON escaping: {value!r}")

    def render(self, row: int) -> str:
        return self.render_many(np.array([row]))[0]

    def render_many(self, rows: np.ndarray) -> list[str]:
        """Render the given rows, in order. Works a page at a time so numpy does the per-field work."""
        c = self.cols
        rows = np.asarray(rows, dtype=np.int64)
        ts = c.ts[rows]
        iso_ms = np.datetime_as_string(ts.astype("datetime64[ms]"), unit="ms").tolist()
        # The uid's hex digits (h) and the same reversed (g), cut into uuids and a document URL by numpy.
        h = _HEX_DIGITS[c.uid[rows]].reshape(len(rows), 32)
        g = h[:, ::-1]
        uuids, uuids2, objects = _texts(_uuid(h)), _texts(_uuid(g)), _texts(_document(h, g))
        out = []
        users, ips, ip_cc, locations = self.users, self.ips, self.ip_cc, self.locations
        agents, ua_strings = self.user_agents, self.ua_strings
        for row_id, t, inst, created, ip, device, user, event, iso, uuid, uuid2, document in zip(
            c.ids[rows].tolist(),
            ts.tolist(),
            c.instantiation[rows].tolist(),
            c.created[rows].tolist(),
            c.ip[rows].tolist(),
            c.device[rows].tolist(),
            c.user[rows].tolist(),
            c.event[rows].tolist(),
            iso_ms,
            uuids,
            uuids2,
            objects,
            strict=True,
        ):
            out.append(
                TEMPLATES[event].fill(
                    {
                        "id": row_id.decode(),
                        "ts": t,
                        "inst": inst,
                        "created": created,
                        "ms": t,
                        "ip": ips[ip],
                        "cc": ip_cc[ip],
                        "location": locations[ip],
                        "ua": ua_strings[device],
                        "useragent": agents[device],
                        "user": users[user],
                        "uuid": uuid,
                        "uuid2": uuid2,
                        "object": document,
                        "iso": iso + "Z",
                        "iso7": iso + "0000Z",
                    }
                )
            )
        return out


# Lower-case hex digit (ASCII code) of each half byte: _HEX_DIGITS[byte] is the byte's two digits.
_HEX_DIGITS = np.frombuffer(bytes(range(256)).hex().encode(), dtype=np.uint8).reshape(256, 2)


def _ascii(text: str, n: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text.encode(), dtype=np.uint8), (n, len(text)))


def _uuid(digits: np.ndarray) -> np.ndarray:
    """8-4-4-4-12 from 32 hex digits a row."""
    dash = _ascii("-", len(digits))
    cuts = (digits[:, :8], dash, digits[:, 8:12], dash, digits[:, 12:16], dash, digits[:, 16:20], dash)
    return np.hstack((*cuts, digits[:, 20:]))


def _document(h: np.ndarray, g: np.ndarray) -> np.ndarray:
    n = len(h)
    return np.hstack(
        (
            _ascii("https://contoso.sharepoint.com/sites/s", n),
            h[:, :2],
            _ascii("/Shared%20Documents/", n),
            g[:, :10],
            _ascii(".docx", n),
        )
    )


def _texts(chars: np.ndarray) -> list[str]:
    """Rows of ASCII codes as str."""
    chars = np.ascontiguousarray(chars)
    return chars.view(f"S{chars.shape[1]}").ravel().astype(f"U{chars.shape[1]}").tolist()
