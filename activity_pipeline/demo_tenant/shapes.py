"""The shape of a demo record, as the published records of the Activities API have it: its fixed parts per kind
of event (`record_structure`, with slots for what varies per record) and the parts that vary per user, place and
device, rendered once (`actor_parts`, `location`, `user_agent`). `render` fills them in per record.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

from activity_pipeline.demo_tenant.catalog import DEVICES, IP_CATEGORIES, PLACES, App, Event
from activity_pipeline.demo_tenant.data import AAD_TENANT_ID, TENANT_ID


class Slot:
    """A per-record value in a template. `raw` slots are inserted as JSON, the others inside a string."""

    def __init__(self, name: str, raw: bool = False) -> None:
        self.name, self.raw = name, raw


def _raw(name: str) -> Slot:
    return Slot(name, raw=True)


def _text(name: str) -> Slot:
    return Slot(name)


def _file_keys(app: App) -> dict[str, Any]:
    """The keys a SharePoint or OneDrive file event's rawDataJson adds (as the published OneDrive record has them)."""
    return {
        "ApplicationId": "4345a7b9-9a63-4910-a426-35363201d503",
        "CorrelationId": _text("uuid"),
        "DoNotDistributeEvent": True,
        "EventSource": "SharePoint",
        "ItemType": "File",
        "ListId": _text("uuid2"),
        "ListItemUniqueId": _text("uuid"),
        "Site": _text("uuid2"),
        "SiteUrl": "https://contoso.sharepoint.com/sites/",
        "SourceFileExtension": "docx",
        "SourceFileName": _text("file"),
        "SourceRelativeUrl": "Shared Documents",
        "UserAgent": _text("ua"),
        "WebId": _text("uuid"),
    }


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
            **(_file_keys(app) if app.app_id in (15600, 20892) else {}),
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
            "BrowserId": _text("uuid2"),
            "Call": op,
            "DeviceTrustType": "",
            "IsDeviceCompliantAndManaged": False,
            "IsInteractiveComputed": True,
            "MfaAuthMethod": None,
            "MfaMaskedDeviceId": None,
            "MfaResult": None,
            "MfaStatusRaw": None,
            "MsodsTenantRegionScope": "EU",
            "SasStatus": None,
            "UserIsPassthru": False,
            "UserTenantId": AAD_TENANT_ID,
            "UserTenantMsodsRegionScope": "EU",
            "HomeTenantUserObjectId": _text("oid"),
            "LoginErrorCode": _raw("code") if event.success is False else 0,
            "LoginStatus": "Failure" if event.success is False else "Success",
            "MfaRequired": False,
            "RequestId": _text("uuid2"),
            "TenantId": AAD_TENANT_ID,
            "TimeStamp": _text("iso7"),
            "Upn": _text("upn"),
            "UserName": "",
            "UserPrincipalObjectID": _text("oid"),
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


def _collected(app: App) -> dict[str, Any]:
    """How the service says it collected the record: Entra ID's sign-ins, Office 365's audit blobs, or a connector."""
    if app.raw_style == "aad_login":
        return {"aadLogins": {"MCAS_Router": False, "correlationId": _text("uuid"), "enqueueTime": _raw("inst"),
                              "routingTime": _raw("inst")}}  # fmt: skip
    if app.raw_style == "o365":
        return {"o365": {"blobCreated": _text("iso7"), "blobId": _text("blob")}}
    return {"lograbber": {"correlationId": _text("uuid"), "enqueueTime": _raw("inst")}}


# Microsoft's apps name their actors in Office 365 (saasId 11161), as published records show; others in themselves.
_MICROSOFT_STYLES = ("o365", "aad_login", "azure")


def actor_of(app: App, event: Event) -> tuple[int, bool]:
    """(the saasId of the record's actor, whether it is an Entra ID sign-in): what the actor's parts depend on."""
    return (11161 if app.raw_style in _MICROSOFT_STYLES else app.app_id), app.raw_style == "aad_login"


def record_structure(app: App, event: Event) -> dict[str, Any]:
    # Slots `accounts`, `actor` and `entity` are the user's own parts (`Renderer._actor`): `accounts` is a
    # fragment of list items, `actor` the resolvedActor object (followed by resolvedActorAccount for an
    # unresolved actor, as the service sends it).
    signin = app.raw_style == "aad_login"
    if signin:  # an Entra ID sign-in's objects, as published records show them
        objects: list[Any] = [
            {"id": "00000002-0000-0ff1-ce00-000000000000", "name": "Office 365 Exchange Online", "objType": 6,
             "role": 1, "tags": []},
            {"id": _text("uuid2"), "name": "Request ID", "objType": 7, "role": 3, "tags": []},
            {"name": "Pass-through authentication", "objType": 7, "role": 3, "tags": [], "value": "false"},
            {"id": _text("oid"), "name": _text("user"), "objType": 2, "resolved": True, "role": 2, "tags": []},
            _raw("accounts"),
        ]  # fmt: skip
    else:
        site = {"objType": 1, "role": 3, "tags": [], "name": _text("object"), "id": _text("uuid2")}
        if app.app_id in (15600, 20892):
            site["serviceObjectType"] = "OneDrive Site Collection" if app.app_id == 15600 else "Site Collection"
        objects = [site, _raw("accounts")]
    main_info: dict[str, Any] = {
        "eventObjects": objects,
        "rawOperationName": event.operation,
        "prettyOperationName": event.operation,
        "type": event.info_type,
    }
    failure = _text("fail_msg") if signin else event.failure_message
    # The same inside a longer string (the description): the slot's marker, which `_compile` fills in place.
    failure_text = "\x00fail_msg\x00" if signin else event.failure_message
    if event.success is not None:
        result: dict[str, Any] = {"isSuccess": event.success}
        if event.success is False:
            result["message"] = failure
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
        "eventRouting": {
            "scubaUnpacker": False,
            "lograbber": True,
            "auditing": True,
            **({"dispersed": True} if signin else {}),
        },
        "device": {"clientIP": _text("ip"), "userAgent": _text("ua"), "countryCode": _text("cc")},
        "location": _raw("location"),
        # A failed sign-in names no user here (the UPN is in failedUserData), as the service sends Entra ID's.
        "user": {"userTags": ["5f01dbbc68df27c17aa6ca81"]}
        if event.success is False
        else {"userName": _text("user"), "userTags": ["5f01dbbc68df27c17aa6ca81"]},
        "userAgent": _raw("useragent"),
        "internals": {"otherIPs": [_text("ip")]},
        "mainInfo": main_info,
        "confidenceLevel": 30 if event.success is not None else 20,
        "source": app.source,
        "lograbberService": {"scubaUnpacker": True}
        if signin
        else {"o365EventGrabber": app.raw_style == "o365", "gediEvent": True},
        "srcAppId": 11161 if app.raw_style in ("o365", "aad_login") else app.app_id,
        "collected": _collected(app),
        "rawDataJson": _raw_data(app, event),
        "resolvedActor": _raw("actor"),
        "uid": _text("id"),
        "appName": app.name,
        "eventTypeName": event.type_name,
        "classifications": [event.classification],
        "entityData": _raw("entity"),
        "description_id": f"EVENT_DESCRIPTION_{event.type_name.removeprefix('EVENT_CATEGORY_')}",
        "description_metadata": {
            "event_category": event.description,
            "colon": "",
            "dash": "",
            "operation_name": event.operation,
            "target_object": "",
            **({"activity_result_message": f"(Failure message: {failure_text})"} if event.success is False else {}),
        },
        "description": event.description + (f" (Failure message: {failure_text})" if event.success is False else ""),
        "genericEventType": event.generic,
        "severity": "MEDIUM" if event.is_admin else "INFO",
    }
    if event.success is False:
        record["failedUserData"] = {"userName": _text("user")}
    return record


# Entra ID's sign-in failures (error code, message) and their share of them; published records show the first three.
SIGN_IN_FAILURES: tuple[tuple[int, str, float], ...] = (
    (50126, "Error validating credentials due to invalid username or password.", 0.70),
    (50058, "Session information is not sufficient for single-sign-on.", 0.15),
    (16000, "General failure", 0.05),
    (50053, "Account is locked because the user tried to sign in too many times with an incorrect user ID or "
            "password.", 0.05),
    (50076, "Due to a configuration change made by your administrator, or because you moved to a new location, you "
            "must use multi-factor authentication to access.", 0.05),
)  # fmt: skip


def location(place: int, category: int, ip: int) -> str:
    cc, city, region, org, lat, lon, _ = PLACES[place]
    cat, cat_value = IP_CATEGORIES[category]
    if cat == 0:  # the service spells "no category" both ways (published records)
        cat_value = "NONE" if ip % 2 else "null"
    location: dict[str, Any] = {
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
        "regionCode": region[:2].upper(),
        "carrier": org.lower(),
        "postalCode": str(10000 + zlib.crc32(city.encode()) % 90000),
    }
    if cat == 5:  # a cloud provider's address carries its tag id, as the published one does
        location["ipTags"] = ["000000290000000000000000"]
    return json.dumps(location, separators=(",", ":"))


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def actor_parts(user: str, kind: int, object_id: str, display: str, saas: int, signin: bool) -> tuple[str, str, str]:
    """A user's (eventObjects account items, resolvedActor [and resolvedActorAccount], entityData), as the service
    writes them for an actor of `kind` (objType 23 resolved, 22 unresolved, 21 an app account)."""
    role = 5 if signin else 4
    link = -(zlib.crc32(f"{user}/{saas}".encode()) % 2**31)  # the same in every process
    account = {"governable": False, "id": user, "instanceId": 0, "link": link, "name": display, "objType": 21,
               "resolved": True, "role": role, "saasId": saas, "tags": []}  # fmt: skip
    actor = {"governable": False, "id": user, "instanceId": "0", "name": display, "objType": "21", "resolved": True,
             "role": "2" if signin else "4", "saasId": str(saas), "tags": []}  # fmt: skip
    entity: dict[str, Any] = {"0": {"displayName": display, "id": {"id": user, "inst": 0, "saas": saas},
                                    "resolved": True}, "1": None, "2": None}  # fmt: skip
    items = [account]
    if kind == 23:
        items.append(
            {**account, "id": object_id, "objType": 23, "governable": True, "tags": ["5f01dbbc68df27c17aa6ca81"]}
        )
        actor = {**actor, "id": object_id, "objType": "23", "governable": True, "tags": ["5f01dbbc68df27c17aa6ca81"]}
        entity["2"] = {"displayName": display, "id": {"id": object_id, "inst": 0, "saas": saas}, "resolved": True}
    elif kind == 22:
        unresolved = {"id": user, "name": user, "resolved": False, "tags": ["000000200000000000000000"]}
        items = [{**account, **unresolved, "objType": 22}]
        actor = {**actor, **unresolved, "objType": "22"}
        entity["0"] = {"displayName": user, "id": {"id": user, "inst": 0, "saas": saas}, "resolved": False}
        account_only = {k: v for k, v in actor.items() if k != "objType"}
        return (",".join(map(_compact, items)), _compact(actor) + ',"resolvedActorAccount":' + _compact(account_only),
                _compact(entity))  # fmt: skip
    return ",".join(map(_compact, items)), _compact(actor), _compact(entity)


def user_agent(device: int) -> str:
    ua, family, name, os_name, os_family, device_type, browser, kind = DEVICES[device]
    system: dict[str, Any] = {"name": os_name, "family": os_family}
    os_version = re.search(r"\d+(\.\d+)?", os_name)
    if os_version:
        system["version"] = os_version.group(0)
    agent: dict[str, Any] = {
        "family": family,
        "name": name,
        "operatingSystem": system,
        "type": kind,
        "typeName": kind,
        "deviceType": device_type,
        "nativeBrowser": kind == "Application",
        "os": os_family.upper(),
        "browser": browser,
        "tags": ["000000000000000000000000"],
    }
    version = re.search(rf"{re.escape(name.split()[0])}/(\d+)\.(\d+)", ua)
    if version:  # a browser's version, as the service parses it from the user agent
        agent.update(major=version.group(1), minor=version.group(2), version=f"{version.group(1)}.{version.group(2)}")
    return json.dumps(agent, separators=(",", ":"))
