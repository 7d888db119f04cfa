"""The tenants file (ACTIVITY_TENANTS_FILE): its tenants and its alert destinations, checked, with errors that name
the file, the tenant (or the line) and what to fix, and never repeat a value that might be a secret."""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from activity_pipeline.alerts import Destination, parse_alerts
from activity_pipeline.config.model import (
    DEFAULT_INTRADAY_MINUTES,
    MAX_INTRADAY_MINUTES,
    TENANT_NAME,
    DemoSettings,
    TenantConfig,
    parse_date,
)
from activity_pipeline.errors import ConfigError
from activity_pipeline.mdca.filters import FilterError, check_filters
from activity_pipeline.mdca.settings import DEFAULT_AUTHORITY_HOST, DEFAULT_REQUESTS_PER_MINUTE, check_base_url

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Tenants-file key -> MdcaSettings field, for the keys that name a variable.
FILE_VARIABLE_KEYS = {
    "token_env": "api_token",
    "tenant_id_env": "tenant_id",
    "client_id_env": "client_id",
    "client_secret_env": "client_secret",
}
FILE_KEYS = (
    "name", "api_url", *FILE_VARIABLE_KEYS, "authority_host", "requests_per_minute", "rate_window_seconds",
    "start_date", "demo", "automation", "filters", "keep_days", "intraday_minutes",
)  # fmt: skip
_DEMO_KEYS = ("seed", "activities_per_day")
# Keys someone may write a secret under; the message then says where secrets go instead.
_SECRET_LIKE = re.compile(r"token|secret|password|key|credential", re.IGNORECASE)


def read_tenants_file(
    path: Path,
    env: Mapping[str, str],
    *,
    default_start_date: dt.date | None = None,
    default_rate: int = DEFAULT_REQUESTS_PER_MINUTE,
) -> tuple[TenantConfig, ...]:
    """The tenants of ACTIVITY_TENANTS_FILE (see `read_file`)."""
    return read_file(path, env, default_start_date=default_start_date, default_rate=default_rate)[0]


def read_file(
    path: Path,
    env: Mapping[str, str],
    *,
    default_start_date: dt.date | None = None,
    default_rate: int = DEFAULT_REQUESTS_PER_MINUTE,
) -> tuple[tuple[TenantConfig, ...], tuple[Destination, ...]]:
    """The tenants and alert destinations of ACTIVITY_TENANTS_FILE, checked, before anything is asked of any
    tenant.

    Each error names the file, the tenant (or the line) and what to fix. The file names variables that hold
    secrets; a value that looks like a secret is refused, and no message repeats a value that might be one.
    """
    import yaml

    where = f"ACTIVITY_TENANTS_FILE ({path})"
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}. Point it at a readable YAML file.") from None
    try:
        # One parse: the node tree gives each tenant's line, and the same nodes give the values.
        # libyaml's loader when PyYAML has it (its wheels do): a file of a thousand tenants reads in milliseconds.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
        try:
            root = loader.get_single_node()
            document = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if isinstance(document, dict) and "type" in document and isinstance(document.get("attributes"), dict):
        # The tenants component's YAML: its attributes are a tenants file's keys.
        document = document["attributes"]
        root = next(value for key, value in root.value if key.value == "attributes")
    if (
        not isinstance(document, dict)
        or "tenants" not in document
        or set(document) - {"tenants", "alerts"}
        or not isinstance(document["tenants"], list)
    ):
        raise ConfigError(
            f"{where} must hold `tenants:`, a list of tenants, and may hold `alerts:`, a list of alert destinations "
            "(see docs/configuration.md)"
        )
    if not document["tenants"]:
        raise ConfigError(f"{where} lists no tenants; add at least one under `tenants:`")
    nodes = {key.value: value for key, value in root.value}
    tenants: list[TenantConfig] = []
    seen: dict[str, int] = {}
    # Every tenant is checked, whatever the ones before it hold: all the file's mistakes are named in one go.
    problems: list[str] = []
    for entry, node in zip(document["tenants"], nodes["tenants"].value, strict=True):
        line = node.start_mark.line + 1
        try:
            tenant = _file_tenant(entry, line, path, env, default_start_date, default_rate, _filters_lines(node))
        except ConfigError as exc:
            problems += str(exc).splitlines()
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str):
                seen.setdefault(name, line)
            continue
        if tenant.name in seen:
            problems.append(
                f"{where}: tenant {tenant.name!r} at line {line} is already defined at line {seen[tenant.name]}; "
                "names must be unique (they key partitions and folders)"
            )
            continue
        seen[tenant.name] = line
        tenants.append(tenant)
    alerts: tuple[Destination, ...] = ()
    if document.get("alerts") is not None:
        node = nodes["alerts"]
        alert_lines = [item.start_mark.line + 1 for item in node.value] if isinstance(node, yaml.SequenceNode) else []
        try:
            alerts = parse_alerts(document["alerts"], alert_lines, path, env, set(seen))
        except ConfigError as exc:
            problems += str(exc).splitlines()
    if problems:
        raise ConfigError(mistakes(problems))
    return tuple(tenants), alerts


def mistakes(problems: list[str]) -> str:
    """One message for every mistake found, each on its own line."""
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} mistakes, one a line:\n" + "\n".join(f"  {p}" for p in problems)


def _filters_lines(node: Any) -> dict[str, int]:
    """The lines of a tenant's `filters:` key ("") and of each filter in it, for messages about its filters."""
    lines: dict[str, int] = {}
    for key, value in node.value if isinstance(node.value, list) else ():
        if getattr(key, "value", None) == "filters":
            lines[""] = key.start_mark.line + 1
            for name, _ in value.value if isinstance(value.value, list) else ():
                lines[str(name.value)] = name.start_mark.line + 1
    return lines


def _file_tenant(
    entry: Any,
    line: int,
    path: Path,
    env: Mapping[str, str],
    start_date: dt.date | None,
    rate: int,
    filters_lines: dict[str, int] | None = None,
) -> TenantConfig:
    """One tenant of the file, checked whole: every mistake in it is named (ConfigError, one line each)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}, line {line}: each tenant is a mapping that starts with `- name: ...`")
    raw_name = entry.get("name")
    name = raw_name if isinstance(raw_name, str) else ""
    valid = bool(TENANT_NAME.fullmatch(name))
    who = f"tenant {name!r} (line {line} of {path})" if valid else f"the tenant at line {line} of {path}"
    problems: list[str] = []

    def fail(problem: str) -> ConfigError:
        problems.append(f"{who}: {problem}")
        return ConfigError(problems[-1])

    if not valid:
        shown = "missing" if raw_name is None else repr(raw_name)
        fail(
            f"`name` must be a lower-case name like contoso (a letter, then up to 39 letters, digits or "
            f"underscores; it is used in partition keys and folder names); got {shown}"
        )
    for key in entry:
        if key in FILE_KEYS:
            continue
        if isinstance(key, str) and _SECRET_LIKE.search(key):
            fail(
                f"unknown key `{key}`. Secrets are never written in this file: put the secret in an environment "
                "variable and name that variable with `token_env` (or `client_secret_env`)"
            )
            continue
        close = difflib.get_close_matches(str(key), FILE_KEYS, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        fail(f"unknown key `{key}`{hint}; the keys a tenant takes are: {', '.join(FILE_KEYS)}")
    variables = _variables(entry, env, fail)
    entra = [k for k in FILE_VARIABLE_KEYS if k != "token_env" and k in entry]
    demo = entry.get("demo")
    settings, api_url = None, None
    if "api_url" in entry and demo is not None:
        fail("give either `api_url` (a real tenant) or `demo` (the built-in demo tenant), not both")
    elif demo is not None:
        if variables:
            fail("a `demo` tenant takes no credentials; remove the *_env keys")
        with contextlib.suppress(ConfigError):  # named in problems
            settings = _demo_settings(demo, fail)
    else:
        if "api_url" not in entry:
            fail("`api_url` is missing: the portal's URL, like https://contoso.eu2.portal.cloudappsecurity.com")
        else:
            try:
                api_url = check_base_url(str(entry["api_url"]), variable="`api_url`")
            except ConfigError as exc:
                fail(str(exc))
        if "token_env" in entry and entra:
            fail(
                f"both kinds of credentials are given (`token_env` and `{'`, `'.join(entra)}`); keep one: a legacy "
                "API token, or an Entra ID application"
            )
        elif not any(k in entry for k in FILE_VARIABLE_KEYS):
            fail(
                "no credentials: add `token_env` (a variable holding a legacy API token), or `tenant_id_env`, "
                "`client_id_env` and `client_secret_env` (an Entra ID application with Investigation.read)"
            )
        elif entra and len(entra) < 3:
            missing = [k for k in FILE_VARIABLE_KEYS if k != "token_env" and k not in entry]
            fail(f"Entra ID credentials are incomplete: add `{'`, `'.join(missing)}`")
    authority = entry.get("authority_host", DEFAULT_AUTHORITY_HOST)
    if "authority_host" in entry:
        try:
            authority = check_base_url(str(authority), variable="`authority_host`")
        except ConfigError as exc:
            fail(str(exc))
    tenant_rate = entry.get("requests_per_minute", rate)
    if isinstance(tenant_rate, bool) or not isinstance(tenant_rate, int) or not 0 <= tenant_rate <= 6000:
        fail(
            "`requests_per_minute` must be a whole number from 1 to 6000 (the service allows 30), or 0 for no "
            f"client-side limit; got {tenant_rate!r}"
        )
    window = entry.get("rate_window_seconds", 60)
    if isinstance(window, bool) or not isinstance(window, int | float) or not 1 <= window <= 3600:
        fail(
            "`rate_window_seconds` must be a number of seconds from 1 to 3600; the service counts its limit in 60 "
            f"(shorter only to scale time in tests and benchmarks); got {window!r}"
        )
    automation = entry.get("automation", True)
    if not isinstance(automation, bool):
        fail(
            "`automation` must be true (the default: the schedule and the sensors run whenever the daemon runs) or "
            f"false (they stay stopped until switched on in the UI); got {automation!r}"
        )
    filters: dict[str, Any] = {}
    try:
        filters = check_filters(entry.get("filters"))
    except FilterError as exc:
        lines = filters_lines or {}
        at = lines.get(exc.filter or "", lines.get("", line))
        problems.append(f"{who}: `filters`, line {at}: {exc}")
    keep_days, copied_to = None, None
    with contextlib.suppress(ConfigError):  # named in problems
        keep_days, copied_to = _keep_days(entry.get("keep_days"), fail)
    intraday = DEFAULT_INTRADAY_MINUTES
    try:
        intraday = intraday_minutes(entry.get("intraday_minutes"), "`intraday_minutes`")
    except ConfigError as exc:
        fail(str(exc))
    first = entry.get("start_date", start_date)
    if isinstance(first, str):
        try:
            first = parse_date(first, "`start_date`")
        except ConfigError as exc:
            fail(str(exc))
            first = None
    if isinstance(first, dt.datetime) or not (first is None or isinstance(first, dt.date)):
        fail(f"`start_date` must be a date like 2026-06-01; got {first!r}")
    if problems:
        raise ConfigError("\n".join(problems))
    return TenantConfig(
        name,
        api_url=api_url,
        variables=variables,
        authority_host=authority,
        requests_per_minute=tenant_rate,
        rate_window_seconds=float(window),
        start_date=first,
        demo=settings,
        automation=automation,
        filters=filters,
        keep_days=keep_days,
        keep_copied_to=copied_to,
        intraday_minutes=intraday,
        origin=who,
    )


def _variables(entry: Mapping[str, Any], env: Mapping[str, str], fail: Any) -> dict[str, str]:
    """The tenant's credential fields -> the variables that hold them, each checked to be set and not empty."""
    variables: dict[str, str] = {}
    for key, field in FILE_VARIABLE_KEYS.items():
        if key not in entry:
            continue
        variable = entry[key]
        if not isinstance(variable, str) or not _VARIABLE_NAME.fullmatch(variable) or _looks_like_secret(variable):
            # Not repeated in the message: it may be the secret itself.
            fail(
                f"`{key}` must name an environment variable (like CONTOSO_MDCA_TOKEN), not hold a value; the value "
                "given looks like a secret. Put the secret in a variable and write the variable's name here"
            )
        elif not (env.get(variable) or "").strip():
            fail(f"`{key}` names the variable {variable}, which is not set (or is empty); set it, or fix the name")
        else:
            variables[field] = variable
    return variables


def intraday_minutes(value: Any, what: str) -> int:
    """`intraday_minutes: 15` (the default when unset), 0 to turn it off, 1 at the least."""
    if value is None or value == "":
        return DEFAULT_INTRADAY_MINUTES
    try:
        minutes = int(value) if not isinstance(value, bool) and str(value).strip().isdigit() else -1
    except (TypeError, ValueError):
        minutes = -1
    if not 0 <= minutes <= MAX_INTRADAY_MINUTES:
        raise ConfigError(
            f"{what} must be a whole number of minutes from 1 to {MAX_INTRADAY_MINUTES} (today is collected that "
            f"often), or 0 to collect each day only once it is complete; got {value!r}"
        )
    return minutes


def _keep_days(value: Any, fail: Any) -> tuple[int | None, str | None]:
    """`keep_days: 400`, or `keep_days: {days: 400, copied_to: s3://archive/activities}`."""
    if value is None:
        return None, None
    copied_to = None
    days = value
    if isinstance(value, dict):
        if set(value) - {"days", "copied_to"} or "days" not in value:
            raise fail("`keep_days` takes a number of days, or a mapping with `days` and `copied_to`")
        days, copied_to = value["days"], value.get("copied_to")
        if not isinstance(copied_to, str) or not copied_to.strip():
            raise fail(
                "`keep_days.copied_to` names the other copy a day must be in before it is deleted here: a folder "
                "(another deployment's ACTIVITY_DATA_DIR) or an object-storage URL like s3://archive/activities"
            )
        if "://" in copied_to:
            from activity_pipeline.storage.dataset import DataUrlError, parse_data_url

            try:
                copied_to = parse_data_url(copied_to)
            except DataUrlError as exc:
                raise fail(f"`keep_days.copied_to`: {str(exc).replace('ACTIVITY_DATA_URL', 'the URL')}") from None
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise fail(
            f"`keep_days` must be a whole number of days of at least 1 (days older are deleted, each with an audit "
            f"record); leave it out to keep every day; got {days!r}"
        )
    return days, copied_to


def _looks_like_secret(text: str) -> bool:
    """Variable names are words joined by underscores; tokens are long runs of letters and digits."""
    return len(text) >= 24 and "_" not in text and any(c.isdigit() for c in text)


def _demo_settings(demo: Any, fail: Any) -> DemoSettings:
    if demo is True:
        return DemoSettings()
    if not isinstance(demo, dict) or set(demo) - set(_DEMO_KEYS):
        raise fail(f"`demo` takes `true` or a mapping with {' and '.join(f'`{k}`' for k in _DEMO_KEYS)}")
    values = {k: demo[k] for k in _DEMO_KEYS if k in demo}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise fail(f"`demo.{key}` must be a whole number; got {value!r}")
    return DemoSettings(**values)
