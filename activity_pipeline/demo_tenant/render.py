"""Render demo records to JSON bytes, shaped like the records the Activities API returns (`shapes`; the published
ones are in the tests' fixtures, and the tests compare their key paths).

Each event kind has one precompiled `%`-template, so rendering a record is one dict and one string
format: a few microseconds, which keeps the server far from being a benchmark's bottleneck.
"""

from __future__ import annotations

import json
import operator
import re
from typing import Any

import numpy as np

from activity_pipeline.demo_tenant.catalog import APPS, DEVICES, PLACES
from activity_pipeline.demo_tenant.data import EVENTS, Columns, Directory
from activity_pipeline.demo_tenant.shapes import (
    SIGN_IN_FAILURES,
    Slot,
    actor_of,
    actor_parts,
    location,
    record_structure,
    user_agent,
)


def _compile(structure: dict[str, Any]) -> str:
    """Turn a structure holding `Slot`s into a `%(name)s` template of compact JSON."""
    slots: dict[str, Slot] = {}

    def mark(value: Any) -> Any:
        if isinstance(value, Slot):
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
    _Template(_compile(record_structure(APPS[app_index], event))) for app_index, event in EVENTS
)
# Each template's actor (`actor_of`), by template.
ACTORS: tuple[tuple[int, bool], ...] = tuple(actor_of(APPS[app_index], event) for app_index, event in EVENTS)
# A failure by the record's first uid byte (0-255): the shares above, deterministic per record.
_FAILURE_BY_BYTE = np.repeat(
    np.arange(len(SIGN_IN_FAILURES)),
    np.diff(np.round(np.cumsum([0, *(f[2] for f in SIGN_IN_FAILURES)]) * 256).astype(int)),
)


class Renderer:
    """Renders records of one tenant by row number."""

    def __init__(self, directory: Directory, cols: Columns) -> None:
        self.cols = cols
        self.users = directory.users
        self.ips = directory.ips
        self.ip_cc = tuple(PLACES[int(p)][0] for p in directory.ip_place)
        self.locations = tuple(
            location(int(p), int(c), k)
            for k, (p, c) in enumerate(zip(directory.ip_place, directory.ip_category, strict=True))
        )
        self.directory = directory
        self._actors: dict[tuple[int, int], tuple[str, str, str]] = {}
        self.user_agents = tuple(user_agent(d) for d in range(len(DEVICES)))
        self.ua_strings = tuple(d[0] for d in DEVICES)
        for value in (*self.users, *self.ips):
            if '"' in value or "\\" in value:
                raise ValueError(f"demo vocabulary must not need JSON escaping: {value!r}")

    def _actor(self, user: int, template: int) -> tuple[str, str, str]:
        """The user's actor parts for a template's app (`actor_parts`), made once."""
        key = (user, template)
        parts = self._actors.get(key)
        if parts is None:
            d = self.directory
            saas, signin = ACTORS[template]
            parts = actor_parts(d.users[user], int(d.actor_kinds[user]), d.object_ids[user], d.display_names[user],
                                saas, signin)  # fmt: skip
            self._actors[key] = parts
        return parts

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
        failures = _FAILURE_BY_BYTE[c.uid[rows][:, 0]].tolist()
        object_ids = self.directory.object_ids
        out = []
        users, ips, ip_cc, locations = self.users, self.ips, self.ip_cc, self.locations
        agents, ua_strings = self.user_agents, self.ua_strings
        for row_id, t, inst, created, ip, device, user, event, iso, uuid, uuid2, document, failure in zip(
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
            failures,
            strict=True,
        ):
            accounts, actor, entity = self._actor(user, event)
            code, message, _ = SIGN_IN_FAILURES[failure]
            upn = users[user]
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
                        "oid": object_ids[user],
                        "upn": upn.replace("#ext#", "#EXT#"),  # rawDataJson.Upn spells it as Entra does
                        "accounts": accounts,
                        "actor": actor,
                        "entity": entity,
                        "code": code,
                        "fail_msg": message,
                        "file": document.rsplit("/", 1)[-1],
                        "blob": f"{iso[:10].replace('-', '')}{uuid[:8]}$audit_sharepoint$Audit_SharePoint$emea0029",
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
