"""Synthetic activity data for the demo tenant, held as columns and rendered to JSON only when served.

A day is a pure function of (seed, day, settings), so every process that asks for the same day gets the
same records. Records are never stored as JSON: a 1,000,000-record day is about 60 MB of numpy columns
plus its ids, and `render.py` writes each record's bytes on demand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass

import numpy as np

from activity_pipeline.days import DAY_MS, HOUR_MS, day_start_ms
from activity_pipeline.demo_tenant.catalog import APPS, DEVICES, DOMAIN, FIRST_NAMES, IP_CATEGORIES, LAST_NAMES, PLACES

TENANT_ID = 97134000
AAD_TENANT_ID = "ebac1a16-81bf-449b-8d43-5732c3c1d999"

# Share of the day's records per UTC hour: quiet nights, a morning ramp, a mid-afternoon peak.
_DIURNAL = np.array(
    [
        0.25,
        0.2,
        0.15,
        0.15,
        0.2,
        0.35,
        0.8,
        1.8,
        3.5,
        5.0,
        5.6,
        5.8,
        5.4,
        5.7,
        6.0,
        5.8,
        5.2,
        4.2,
        2.8,
        1.8,
        1.2,
        0.8,
        0.5,
        0.35,
    ],
)
DIURNAL_WEIGHTS = _DIURNAL / _DIURNAL.sum()

EVENTS = tuple((app_index, event) for app_index, app in enumerate(APPS) for event in app.events)


@dataclass(frozen=True)
class Outage:
    """Records the tenant never produces: one app, one UTC hour, or both, on one day or every day."""

    app_id: int | None = None
    hour: int | None = None
    day: dt.date | None = None

    def __post_init__(self) -> None:
        if self.app_id is None and self.hour is None:
            raise ValueError("an Outage needs an app_id, an hour, or both")
        if self.hour is not None and not 0 <= self.hour <= 23:
            raise ValueError(f"Outage hour must be 0-23, got {self.hour}")


@dataclass(frozen=True)
class TenantSpec:
    """What the demo tenant holds. Two specs that compare equal produce the same records."""

    days: tuple[dt.date, ...]
    activities_per_day: int = 20_000
    seed: int = 7
    # Days that also hold one tie of `stress_tie` records sharing a single millisecond.
    stress_days: frozenset[dt.date] = frozenset()
    stress_tie: int = 6_000
    outages: tuple[Outage, ...] = ()
    # Share of records that sit in bursts sharing one millisecond.
    burst_share: float = 0.02

    def __post_init__(self) -> None:
        if self.activities_per_day < 2:
            raise ValueError("activities_per_day must be at least 2")
        if self.stress_tie < 1:
            raise ValueError("stress_tie must be positive")
        if not self.days:
            raise ValueError("a tenant needs at least one day")

    @classmethod
    def last_complete_days(cls, n_days: int, *, today: dt.date | None = None, **kwargs: object) -> TenantSpec:
        """The `n_days` complete UTC days before `today` (default: the real UTC date)."""
        if n_days < 1:
            raise ValueError(f"n_days must be at least 1, got {n_days}")
        today = today or dt.datetime.now(dt.UTC).date()
        days = tuple(today - dt.timedelta(days=k) for k in range(n_days, 0, -1))
        return cls(days=days, **kwargs)  # type: ignore[arg-type]


@dataclass
class Columns:
    """Column arrays for every record of a tenant, one row per record, in generation order."""

    ts: np.ndarray  # int64 epoch ms, when it happened
    created: np.ndarray  # int64 epoch ms, when the service saved it
    instantiation: np.ndarray  # int64 epoch ms
    event: np.ndarray  # int16 index into EVENTS
    app: np.ndarray  # int8 index into APPS
    user: np.ndarray  # int32 index into Directory.users
    ip: np.ndarray  # int32 index into Directory.ips
    device: np.ndarray  # int8 index into DEVICES
    uid: np.ndarray  # (n, 16) uint8 random bytes, source of the record's uuids
    ids: np.ndarray  # bytes ("S") `_id`

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class Directory:
    """Users and IP addresses, shared by all days of a tenant."""

    users: tuple[str, ...]
    user_home_ip: np.ndarray  # int32
    ips: tuple[str, ...]
    ip_place: np.ndarray  # int8 index into PLACES
    ip_category: np.ndarray  # int8 index into IP_CATEGORIES
    # Who each user is to the service, as real records show actors (docs/demo-tenant.md): the Entra object id,
    # the display name, and how the service resolves the actor (ACTOR_RESOLVED, ACTOR_UNRESOLVED, ACTOR_ACCOUNT).
    object_ids: tuple[str, ...] = ()
    display_names: tuple[str, ...] = ()
    actor_kinds: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int8))


# How the service names a user's actor (`resolvedActor.objType`): a resolved Entra user (23, its id the object id),
# an unresolved one (22, id and name the UPN, with `resolvedActorAccount`), an app account only (21, id the UPN).
ACTOR_RESOLVED, ACTOR_UNRESOLVED, ACTOR_ACCOUNT = 23, 22, 21
GUEST_SHARE = 0.05
GUEST_DOMAINS = ("fabrikam.com", "gmail.com", "northwindtraders.com")


def build_directory(spec: TenantSpec) -> Directory:
    rng = np.random.default_rng([spec.seed, 0xD1])
    n_users = int(np.clip(spec.activities_per_day // 40, 60, 5000))
    users = []
    seen: set[str] = set()
    for k in range(n_users):
        first = FIRST_NAMES[rng.integers(len(FIRST_NAMES))]
        last = LAST_NAMES[rng.integers(len(LAST_NAMES))]
        name = f"{first}.{last}@{DOMAIN}"
        if name in seen:
            name = f"{first}.{last}{k}@{DOMAIN}"
        seen.add(name)
        users.append(name)
    n_ips = n_users * 2
    first_octets = np.array([20, 23, 40, 52, 62, 81, 91, 103, 151, 185, 193, 212])
    octets = np.column_stack(
        [first_octets[rng.integers(len(first_octets), size=n_ips)], rng.integers(0, 256, size=(n_ips, 3))]
    )
    ips = []
    for row in octets:
        ips.append(".".join(str(int(v)) for v in row))
    # De-duplicate by bumping the last octet: ip.address filters must map to one row.
    unique: dict[str, int] = {}
    for k, ip in enumerate(ips):
        while ip in unique:
            parts = ip.split(".")
            parts[3] = str((int(parts[3]) + 1) % 256)
            ip = ".".join(parts)
        unique[ip] = k
        ips[k] = ip
    place_w = np.array([p[6] for p in PLACES])
    ip_place = rng.choice(len(PLACES), size=n_ips, p=place_w / place_w.sum()).astype(np.int8)
    ip_category = rng.choice(len(IP_CATEGORIES), size=n_ips, p=[0.55, 0.25, 0.03, 0.04, 0.08, 0.05]).astype(np.int8)
    # Identities from a stream of their own, so the users' activity above is what it always was.
    who = np.random.default_rng([spec.seed, 0x1D])
    display_names = tuple(
        " ".join(part.rstrip("0123456789").title() for part in u.split("@")[0].split(".")) for u in users
    )
    guests = who.random(n_users) < GUEST_SHARE
    for k in np.flatnonzero(guests).tolist():  # a guest's UPN, as Entra writes it: <mail with _ for @>#EXT#@<tenant>
        users[k] = f"{users[k].split('@')[0]}_{GUEST_DOMAINS[k % len(GUEST_DOMAINS)]}#ext#@{DOMAIN}"
    kinds = who.choice([ACTOR_RESOLVED, ACTOR_UNRESOLVED, ACTOR_ACCOUNT], size=n_users, p=[0.85, 0.1, 0.05])
    kinds[guests] = ACTOR_UNRESOLVED  # published guests' actors are unresolved (objType 22)
    object_ids = tuple(str(uuid.UUID(bytes=who.bytes(16), version=4)) for _ in range(n_users))
    return Directory(
        users=tuple(users),
        user_home_ip=np.arange(n_users, dtype=np.int32),
        ips=tuple(ips),
        ip_place=ip_place,
        ip_category=ip_category,
        object_ids=object_ids,
        display_names=display_names,
        actor_kinds=kinds.astype(np.int8),
    )


def generate_day(spec: TenantSpec, directory: Directory, day: dt.date) -> Columns:
    """Every record whose `timestamp` falls on `day`, visible or not yet."""
    rng = np.random.default_rng([spec.seed, day.toordinal()])
    n = spec.activities_per_day
    start = day_start_ms(day)

    app_w = np.array([a.weight for a in APPS])
    app = rng.choice(len(APPS), size=n, p=app_w / app_w.sum()).astype(np.int8)
    hour = rng.choice(24, size=n, p=DIURNAL_WEIGHTS)
    ts = start + hour * HOUR_MS + rng.integers(0, HOUR_MS, size=n)
    second_res = np.array([a.resolution == "s" for a in APPS])[app]
    ts = np.where(second_res, ts // 1000 * 1000, ts)

    # Bursts: groups of 20-120 records that share one millisecond (a script, a sync client).
    n_burst = int(n * spec.burst_share)
    ms_rows = np.flatnonzero(~second_res)
    if n_burst >= 20 and len(ms_rows) > n_burst:
        burst_idx = rng.choice(ms_rows, size=n_burst, replace=False)
        sizes = rng.integers(20, 121, size=n_burst // 20 + 1)
        group = np.repeat(np.arange(len(sizes)), sizes)[:n_burst]
        burst_ts = (
            start
            + rng.choice(24, size=len(sizes), p=DIURNAL_WEIGHTS) * HOUR_MS
            + rng.integers(0, HOUR_MS, size=len(sizes))
        )
        ts[burst_idx] = burst_ts[group]
    # The day's edges: its first and last millisecond, from a sign-in source with millisecond resolution.
    app[:2] = next(k for k, a in enumerate(APPS) if a.app_id == 11161)
    ts[0] = start
    ts[1] = start + DAY_MS - 1

    if day in spec.stress_days:
        tie = spec.stress_tie
        exchange = next(k for k, a in enumerate(APPS) if a.app_id == 20893)
        app = np.concatenate([app, np.full(tie, exchange, dtype=np.int8)])
        ts = np.concatenate([ts, np.full(tie, start + 13 * HOUR_MS + 7 * 60_000, dtype=np.int64)])
        n += tie

    event = np.empty(n, dtype=np.int16)
    for app_index, a in enumerate(APPS):
        rows = np.flatnonzero(app == app_index)
        base = next(k for k, (ai, _) in enumerate(EVENTS) if ai == app_index)
        weights = np.array([e.weight for e in a.events])
        event[rows] = base + rng.choice(len(a.events), size=len(rows), p=weights / weights.sum())

    n_users = len(directory.users)
    # A few heavy users, a long tail.
    user = (rng.zipf(1.6, size=n) - 1) % n_users
    user = rng.permutation(n_users)[user].astype(np.int32)
    travelling = rng.random(n) < 0.12
    ip = np.where(travelling, rng.integers(0, len(directory.ips), size=n), directory.user_home_ip[user]).astype(
        np.int32
    )
    device = rng.integers(0, len(DEVICES), size=n).astype(np.int8)

    # created - timestamp: seconds to minutes for most, a tail of hours, a tail of one to three days.
    lag = np.clip(rng.lognormal(np.log(90_000), 1.0, size=n), 2_000, 30 * 60_000).astype(np.int64)
    tail = rng.random(n)
    hours_late = tail < 0.03
    days_late = tail > 0.99
    lag[hours_late] = rng.integers(HOUR_MS, 12 * HOUR_MS, size=int(hours_late.sum()))
    lag[days_late] = rng.integers(DAY_MS, 3 * DAY_MS, size=int(days_late.sum()))
    by_days = np.array([a.late_by_days for a in APPS])[app]
    lag[by_days] = rng.integers(DAY_MS, 3 * DAY_MS, size=int(by_days.sum()))
    if day in spec.stress_days:
        # The tie was saved in one go, too: it is a tie for sortField=created as well.
        lag[-spec.stress_tie :] = 95_000
    created = ts + lag
    instantiation = created - np.minimum(lag - 1, rng.integers(50, 3_000, size=n))

    uid = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    cols = Columns(
        ts=ts.astype(np.int64),
        created=created.astype(np.int64),
        instantiation=instantiation.astype(np.int64),
        event=event,
        app=app,
        user=user,
        ip=ip,
        device=device,
        uid=uid,
        ids=_make_ids(ts, app, uid),
    )
    keep = _outage_mask(spec, day, cols)
    return cols if keep is None else _take(cols, np.flatnonzero(keep))


def _make_ids(ts: np.ndarray, app: np.ndarray, uid: np.ndarray) -> np.ndarray:
    """`_id` in the app's own format; formats vary across apps as they do in real tenants."""
    hexes = [bytes(row).hex() for row in uid]
    out = []
    for k, h in enumerate(hexes):
        a = APPS[app[k]]
        u = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        if a.id_style == "o365":
            out.append(f"{TENANT_ID}_{a.app_id}_{u}")
        elif a.id_style == "sha":
            out.append(h + h[::-1])
        elif a.id_style == "ms_uuid":
            out.append(f"{int(ts[k])}_{u}")
        else:
            out.append(f"{int(ts[k]) // 1000:08x}{h[:16]}")
    return np.array(out, dtype="S")


def _outage_mask(spec: TenantSpec, day: dt.date, cols: Columns) -> np.ndarray | None:
    outages = [o for o in spec.outages if o.day in (None, day)]
    if not outages:
        return None
    app_ids = np.array([a.app_id for a in APPS])[cols.app]
    hours = (cols.ts - day_start_ms(day)) // HOUR_MS
    keep = np.ones(len(cols), dtype=bool)
    for o in outages:
        hit = np.ones(len(cols), dtype=bool)
        if o.app_id is not None:
            hit &= app_ids == o.app_id
        if o.hour is not None:
            hit &= hours == o.hour
        keep &= ~hit
    return keep


def _take(cols: Columns, rows: np.ndarray) -> Columns:
    return Columns(**{name: getattr(cols, name)[rows] for name in cols.__dataclass_fields__})


def generate(spec: TenantSpec) -> tuple[Directory, Columns]:
    """All days of the tenant, concatenated."""
    directory = build_directory(spec)
    days = [generate_day(spec, directory, day) for day in sorted(set(spec.days))]
    merged = Columns(
        **{name: np.concatenate([getattr(d, name) for d in days]) for name in Columns.__dataclass_fields__}
    )
    return directory, merged
