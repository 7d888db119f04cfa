"""How a record is read: the few fields the typed columns need, decoded with msgspec, and who did it.

Real records name the actor in several places, differently by kind of activity (failed sign-ins carry no
`user.userName`; an unresolved actor's id is its UPN, a resolved one's its object id): `identity` reads them in
one documented order (docs/dataset.md). Everything the columns leave out stays in `raw`.
"""

from __future__ import annotations

import re
import typing
from typing import Any, NamedTuple

import msgspec


# gc=False: a day decodes millions of these (a dozen or so per record). Tracked by the garbage collector, they
# set off a collection every few hundred records: 1,883 collections and 0.56 s of a 200,000-record scan, all
# of it holding the GIL. They hold only strings, numbers and each other, so they can't form a reference cycle.
class _Device(msgspec.Struct, gc=False):
    clientIP: str | None = None
    userAgent: str | None = None


class _Location(msgspec.Struct, gc=False):
    countryCode: str | None = None
    city: str | None = None
    organizationSearchable: str | None = None
    region: str | None = None
    categoryValue: str | None = None
    ipTags: tuple[str, ...] | None = None
    anonymousProxy: bool | None = None


class _User(msgspec.Struct, gc=False):
    userName: str | None = None


class _System(msgspec.Struct, gc=False):
    name: str | None = None


class _UserAgent(msgspec.Struct, gc=False):
    deviceType: str | None = None
    operatingSystem: _System | None = None


class _Result(msgspec.Struct, gc=False):
    isSuccess: bool | None = None
    message: str | None = None


class _Object(msgspec.Struct, gc=False):
    """One of `mainInfo.eventObjects`. Real records send `objType` as a number here (a string in resolvedActor)."""

    objType: int | str | None = None
    name: str | None = None
    id: str | int | None = None
    value: str | int | float | bool | None = None
    role: int | str | None = None
    link: int | None = None
    serviceObjectType: str | None = None


class _MainInfo(msgspec.Struct, gc=False):
    rawOperationName: str | None = None
    type: str | None = None
    activityResult: _Result | None = None
    # Tuples, not lists: a tuple of untracked objects leaves the garbage collector's lists (see `gc=False` above).
    eventObjects: tuple[_Object, ...] | None = None


class _Actor(msgspec.Struct, gc=False):
    """`resolvedActor` (and `resolvedActorAccount`, which has no objType): its numbers arrive as strings."""

    id: str | None = None
    name: str | None = None
    objType: str | int | None = None


class _RawData(msgspec.Struct, gc=False):
    """The few keys of the app's own event (`rawDataJson`) that name the actor or the failure. Their types vary
    by app, so each is taken as whatever JSON value it is and judged when used."""

    Upn: Any = None
    UserId: Any = None
    UserPrincipalObjectID: Any = None
    LoginErrorCode: Any = None
    UserType: Any = None


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
    failedUserData: _User | None = None
    userAgent: _UserAgent | None = None
    mainInfo: _MainInfo | None = None
    resolvedActor: _Actor | None = None
    resolvedActorAccount: _Actor | None = None
    rawDataJson: _RawData | None = None
    source: int | None = None


_typed = msgspec.json.Decoder(ActivityRecord).decode
_generic = msgspec.json.Decoder().decode


def _tolerant(value: Any, kind: Any) -> Any:
    """`value` as `kind`, keeping every part that fits and leaving the others None (or out of a list): one field
    of an unexpected type never costs the record its other columns. Numbers sent as strings of digits are read."""
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError:
        pass
    for option in typing.get_args(kind) or (kind,):
        if isinstance(option, type) and issubclass(option, msgspec.Struct) and isinstance(value, dict):
            return option(**{f.name: _tolerant(value[f.encode_name], f.type)
                             for f in msgspec.structs.fields(option) if f.encode_name in value})  # fmt: skip
        if typing.get_origin(option) is tuple and isinstance(value, list):
            item = typing.get_args(option)[0]
            return tuple(x for x in (_tolerant(v, item) for v in value) if x is not None)
    return None


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
    return _tolerant(obj, ActivityRecord)


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Event objects' objType, as published records show them: the kinds a query asks for by name.
OBJECT_KINDS = {1: "site", 2: "user", 6: "app", 7: "property", 21: "account", 22: "unresolved_account",
                23: "entra_user"}  # fmt: skip
_ACCOUNTS = (21, 22)  # an account object's (or actor's) id is its UPN
# Office 365's UserType (the Management Activity API's schema): 2 Admin, 3 DcAdmin (a Microsoft datacenter admin).
_ADMIN_USER_TYPES = (2, 3)


def number(value: Any) -> int | None:
    """An integer, or a string of digits read as one (the service sends `objType` and `role` both ways); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _upn(value: Any) -> str | None:
    return value if isinstance(value, str) and "@" in value else None


def _guid(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and _GUID.fullmatch(value) else None


class Identity(NamedTuple):
    user_name: str | None
    object_id: str | None
    display_name: str | None


def identity(r: ActivityRecord) -> Identity:
    """Who did it, from wherever the record says it (docs/dataset.md has the order, from real records).

    The UPN: `user.userName`; else `failedUserData.userName` (failed sign-ins carry no userName); else the
    resolved actor's id when it is an account (objType 21/22); else the account event object linked to the actor;
    else `resolvedActorAccount.id`; else `rawDataJson.Upn` (sign-ins), `rawDataJson.UserId` (Office 365 audit).
    The object id: the resolved actor's id when it is an Entra user (objType 23); else
    `rawDataJson.UserPrincipalObjectID`; else the id of the user event object (objType 2) named by the UPN;
    never anything but a GUID. The display name: the actor's name (or its linked objects'), unless it only
    repeats the UPN (an unresolved actor's does).

    Called for every record a scan stores: the usual record (a userName, a resolved actor with its name) is
    answered without looking through its event objects.
    """
    actor = r.resolvedActor
    actor_type = _ACTOR_TYPES.get(actor.objType) if actor is not None else None  # type: ignore[arg-type]
    raw = r.rawDataJson
    upn = (r.user.userName if r.user is not None else None) or (
        r.failedUserData.userName if r.failedUserData is not None else None
    )
    if not upn and actor is not None and actor_type in _ACCOUNTS:
        upn = _upn(actor.id)
    linked = None
    if not upn:
        linked = _linked(r)
        upn = (
            _upn(next((o.id for o in linked if number(o.objType) in _ACCOUNTS), None))
            or (_upn(r.resolvedActorAccount.id) if r.resolvedActorAccount is not None else None)
            or (_upn(raw.Upn) or _upn(raw.UserId) if raw is not None else None)
        )
    object_id = (_guid(actor.id) if actor_type == 23 else None) or (  # type: ignore[union-attr]
        _guid(raw.UserPrincipalObjectID) if raw is not None else None
    )
    if object_id is None and upn:
        folded = upn.casefold()
        objects = (r.mainInfo.eventObjects if r.mainInfo is not None else None) or ()
        object_id = next((_guid(o.id) for o in objects
                          if number(o.objType) == 2 and isinstance(o.name, str) and o.name.casefold() == folded
                          and _guid(o.id)), None)  # fmt: skip
    display = _display(actor.name if actor is not None else None, upn)
    if display is None and actor is not None:
        display = next((n for n in (o.name for o in (linked if linked is not None else _linked(r)))
                        if _display(n, upn)), None)  # fmt: skip
    return Identity(upn or None, object_id, display)


_ACTOR_TYPES: dict[Any, int] = {**{str(t): t for t in (21, 22, 23)}, **{t: t for t in (21, 22, 23)}}


def _linked(r: ActivityRecord) -> tuple[_Object, ...]:
    """The event objects linked to the resolved actor: those with the `link` of the object that is the actor."""
    actor, info = r.resolvedActor, r.mainInfo
    objects = (info.eventObjects if info is not None else None) or ()
    if actor is None or actor.id is None or not objects:
        return ()
    link = next((o.link for o in objects if o.id == actor.id and o.link is not None), None)
    return () if link is None else tuple(o for o in objects if o.link == link)


def _display(name: Any, upn: str | None) -> str | None:
    """`name` as a display name: a non-empty string that is neither the UPN again nor a GUID."""
    if not isinstance(name, str) or not name or name == upn:
        return None
    if upn is not None and name.casefold() == upn.casefold():
        return None
    return None if len(name) == 36 and _GUID.fullmatch(name) else name


def is_admin(r: ActivityRecord) -> bool:
    """`mainInfo.type` "admin" (no published record shows it), or an Office 365 audit record's UserType Admin or
    DcAdmin (documented by Microsoft; published records show UserType 0, Regular)."""
    info = r.mainInfo
    if info is not None and info.type == "admin":
        return True
    return r.rawDataJson is not None and number(r.rawDataJson.UserType) in _ADMIN_USER_TYPES


def ip_category(value: str | None) -> str | None:
    """`location.categoryValue`, without the service's spellings of none ("null", "NONE", empty)."""
    return None if value is None or value.strip().lower() in ("", "null", "none") else value


def text(value: Any) -> str | None:
    """A JSON scalar as text, as a typed column of strings holds it (`true`, `5`); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)
