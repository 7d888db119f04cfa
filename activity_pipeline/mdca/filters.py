"""The Activities API's own filters, as a tenant collects under them: which filters, which operators, which values.

A tenant's `filters:` (tenants file) or `MDCA_FILTERS` (JSON) is checked here when the definitions load, and
normalized, so that the same filters always read the same (`eq`/`neq`/`startswith`/... values as lists, keys in
order): that form goes into every request, each stored day's manifest and `partition_health`.

    >>> check_filters({"service": {"neq": 20893}, "activity.type": {"eq": True}})
    {'activity.type': {'eq': True}, 'service': {'neq': [20893]}}
    >>> check_filters({"service": {"contains": "Teams"}})  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    activity_pipeline.mdca.filters.FilterError: `service` does not take the operator `contains`; it takes eq, neq
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

# The pipeline owns the window: `date` per partition, `created` for top-ups.
OWNED = ("date", "created")
SETS = ("isset", "isnotset")
TAKEN_ACTIONS = (
    "block", "proxy", "BypassProxy", "encrypt", "decrypt", "verified", "encryptionFailed", "protect", "verify", "null",
)  # fmt: skip
IP_CATEGORIES = {1: "corporate", 2: "administrative", 3: "risky", 4: "VPN", 5: "cloud provider", 6: "other"}


class FilterError(ValueError):
    """A filter the API would refuse, or one the pipeline owns; the message names it and what is allowed."""

    def __init__(self, message: str, filter: str | None = None) -> None:
        super().__init__(message)
        self.filter = filter


def _whole(what: str, allowed: Callable[[int], bool] = lambda v: v >= 0) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and allowed(value)
        return None if ok else f"{what}; got {value!r}"

    return check


def _text(what: str, pattern: str | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, str) and value.strip() != "" and (pattern is None or re.fullmatch(pattern, value))
        return None if ok else f"{what}; got {value!r}"

    return check


def _ip(value: Any) -> str | None:
    try:
        ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        return f"an IP address like 203.0.113.7; got {value!r}"
    return None


def _taken(value: Any) -> str | None:
    return None if value in TAKEN_ACTIONS else f"one of {', '.join(TAKEN_ACTIONS)}; got {value!r}"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"true or false; got {value!r}"


@dataclasses.dataclass(frozen=True)
class Filter:
    """One filter: its operators, each with the check of one value (None: the operator takes `true`)."""

    operators: dict[str, Callable[[Any], str | None] | None]
    meaning: str


def _ops(check: Callable[[Any], str | None], *names: str, sets: bool = False) -> dict[str, Any]:
    return {**{n: check for n in names}, **({s: None for s in SETS} if sets else {})}


_APP = _whole("an app id, a whole number like 11161 (Office 365)", lambda v: v > 0)
_USER = _text("a user name like alice@contoso.com")
_PREFIX = _text("an address prefix like 10.1.")
_CATEGORY = _whole(
    f"an IP category: {', '.join(f'{k} {v}' for k, v in IP_CATEGORIES.items())}", IP_CATEGORIES.__contains__
)
# The filters a tenant may collect under, with the operators the API documents for each.
FILTERS: dict[str, Filter] = {
    "service": Filter(_ops(_APP, "eq", "neq"), "the app (appId)"),
    "instance": Filter(_ops(_whole("an app instance id, a whole number"), "eq", "neq"), "the app instance"),
    "source": Filter(_ops(_whole("a source id, a whole number (2: app connector)"), "eq", "neq"), "source"),
    "user.username": Filter(
        {**_ops(_USER, "eq", "neq", sets=True), "startswith": _text("a prefix of user names")}, "user.userName"
    ),
    "user.orgUnit": Filter(_ops(_text("an organisational unit name"), "eq", "neq", sets=True), "the user's org unit"),
    "activity.type": Filter({"eq": _flag}, "administrative activities (true) or the others (false)"),
    "activity.eventActionType": Filter(_ops(_text("an event type name"), "eq", "neq"), "eventTypeName"),
    "activity.eventType": Filter(_ops(_text("an event type name"), "eq", "neq"), "eventTypeName (older name)"),
    "actionType": Filter(
        _ops(_text("an operation name like FileDownloaded"), "eq", "neq", "contains", sets=True),
        "the app's operation name",
    ),
    "activity.impersonated": Filter({"eq": _flag}, "impersonated activities (true) or not (false)"),
    "activity.takenAction": Filter(_ops(_taken, "eq", "neq"), "the action taken on the activity"),
    "device.type": Filter(_ops(_text("a device type like Desktop or Mobile"), "eq", "neq"), "userAgent.deviceType"),
    "ip.address": Filter(
        {**_ops(_ip, "eq", "neq", sets=True), **_ops(_PREFIX, "startswith", "doesnotstartwith")}, "device.clientIP"
    ),
    "ip.category": Filter(_ops(_CATEGORY, "eq", "neq"), "location.category"),
    "location.country": Filter(
        _ops(_text("a two-letter country code like DE", r"[A-Za-z]{2}"), "eq", "neq", sets=True),
        "location.countryCode",
    ),
}


def check_filters(filters: Any) -> dict[str, dict[str, Any]]:
    """`filters` checked and normalized; raises FilterError naming the filter, the operator or the value."""
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise FilterError(
            'filters are a mapping of filter name to {operator: value}, like {"service": {"neq": [20893]}}; '
            f"got {type(filters).__name__}"
        )
    normal: dict[str, dict[str, Any]] = {}
    for name in sorted(filters, key=str):
        try:
            normal[name] = _filter(name, filters[name])
        except FilterError as exc:
            exc.filter = str(name)
            raise
    return normal


def _filter(name: Any, spec: Any) -> dict[str, Any]:
    if name in OWNED:
        raise FilterError(
            f"`{name}` is the pipeline's own: each run sets it to the partition's UTC day (and top-ups set "
            "`created`); leave it out"
        )
    known = FILTERS.get(name) if isinstance(name, str) else None
    if known is None:
        close = difflib.get_close_matches(str(name), FILTERS, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise FilterError(f"unknown filter `{name}`{hint}; the filters a tenant may use: {', '.join(FILTERS)}")
    if not isinstance(spec, dict) or not spec:
        raise FilterError(f"`{name}` takes a mapping of operator to value, like {{eq: [...]}}; got {spec!r}")
    normal = {}
    for op in sorted(spec, key=str):
        if op not in known.operators:
            raise FilterError(f"`{name}` does not take the operator `{op}`; it takes {', '.join(known.operators)}")
        normal[op] = _value(name, op, spec[op], known.operators[op])
    return normal


def _value(name: str, op: str, value: Any, check: Callable[[Any], str | None] | None) -> Any:
    if check is None:  # isset / isnotset
        if value is not True:
            raise FilterError(f"`{name}` `{op}` takes true; got {value!r}")
        return True
    if check is _flag:  # one boolean
        problem = check(value)
        if problem:
            raise FilterError(f"`{name}` `{op}` takes {problem}")
        return value
    values = value if isinstance(value, list) else [value]
    if not values:
        raise FilterError(f"`{name}` `{op}` takes at least one value; got an empty list")
    for one in values:
        problem = check(one)
        if problem:
            raise FilterError(f"`{name}` `{op}` takes {problem}")
    return values


def describe(filters: dict[str, dict[str, Any]]) -> str:
    """The filters on one line, as JSON ("" for none: every activity).

    >>> describe({"service": {"neq": [20893]}})
    '{"service":{"neq":[20893]}}'
    """
    return json.dumps(filters, separators=(",", ":"), sort_keys=True) if filters else ""


def bounds(spec: Any) -> tuple[int | None, int | None] | None:
    """The [low, high) bounds, epoch ms, that a time filter's `gte`/`gt`/`lte`/`lt` set; None when there are none.

    >>> bounds({"gte": 10}), bounds({"gt": 10, "lte": 20}), bounds({"range": []})
    ((10, None), (11, 21), None)
    """
    if not isinstance(spec, dict):
        return None
    lo = hi = None
    if "gte" in spec:
        lo = spec["gte"]
    if "gt" in spec:
        lo = spec["gt"] + 1
    if "lte" in spec:
        hi = spec["lte"] + 1
    if "lt" in spec:
        hi = spec["lt"]
    return (lo, hi) if lo is not None or hi is not None else None


def within(value: int | None, limits: tuple[int | None, int | None]) -> bool:
    """Whether `value` (epoch ms) lies in `limits` ([low, high)); a missing value never does."""
    lo, hi = limits
    if value is None or isinstance(value, bool):
        return False
    return (lo is None or value >= lo) and (hi is None or value < hi)


def utc(ms: int) -> str:
    """Epoch milliseconds as a UTC time with milliseconds: 2026-11-25T02:10:00.000Z."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
