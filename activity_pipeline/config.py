"""The one place that reads the environment and the tenants file, and the project's defaults.

Everything else takes what it needs from a `PipelineConfig`. Secrets are not read here: the config only
notes which variables hold them (after checking they are set), and Dagster resources receive them as
`dg.EnvVar`, so the UI shows a variable's name and never its value.

Without ACTIVITY_TENANTS_FILE there is one tenant, from the MDCA_* variables (or the demo tenant), named by
MDCA_TENANT_NAME:

>>> config = load({"ACTIVITY_DATA_DIR": "/srv/activities", "MDCA_REQUESTS_PER_MINUTE": "20"})
>>> config.data_dir, [(t.name, t.requests_per_minute, t.uses_demo_tenant) for t in config.tenants]
(PosixPath('/srv/activities'), [('default', 20, True)])
>>> tenant = load({"MDCA_API_URL": "https://contoso.eu2.portal.cloudappsecurity.com", "MDCA_API_TOKEN": "t"}).tenants[0]
>>> tenant.api_url, tenant.variables
('https://contoso.eu2.portal.cloudappsecurity.com', {'api_token': 'MDCA_API_TOKEN'})
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from activity_pipeline.mdca import ConfigError, MdcaSettings
from activity_pipeline.mdca.settings import DEFAULT_AUTHORITY_HOST, DEFAULT_REQUESTS_PER_MINUTE, check_base_url

DEFAULT_DATA_DIR = "data"
DEFAULT_TENANT_NAME = "default"
TENANT_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# MdcaSettings field -> the variable it is read from, for the single tenant configured without a file.
TENANT_VARIABLES = {
    "api_url": "MDCA_API_URL",
    "api_token": "MDCA_API_TOKEN",
    "tenant_id": "MDCA_TENANT_ID",
    "client_id": "MDCA_CLIENT_ID",
    "client_secret": "MDCA_CLIENT_SECRET",
    "authority_host": "MDCA_AUTHORITY_HOST",
}
# Tenants-file key -> MdcaSettings field, for the keys that name a variable.
FILE_VARIABLE_KEYS = {
    "token_env": "api_token",
    "tenant_id_env": "tenant_id",
    "client_id_env": "client_id",
    "client_secret_env": "client_secret",
}
FILE_KEYS = (
    "name", "api_url", *FILE_VARIABLE_KEYS, "authority_host", "requests_per_minute", "rate_window_seconds",
    "start_date", "demo", "automation",
)  # fmt: skip
_DEMO_KEYS = ("seed", "activities_per_day")
# Keys someone may write a secret under; the message then says where secrets go instead.
_SECRET_LIKE = re.compile(r"token|secret|password|key|credential", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """A tenant served by the built-in demo tenant: synthetic activities over HTTP on 127.0.0.1."""

    seed: int = 7
    activities_per_day: int = 20_000


@dataclasses.dataclass(frozen=True)
class TenantConfig:
    """One tenant: its name, where it is, which variables hold its credentials, how fast, from which day."""

    name: str
    # None: the built-in demo tenant stands in (`demo`).
    api_url: str | None = None
    # MdcaSettings field -> the variable that holds it (api_token, or tenant_id, client_id and client_secret).
    variables: dict[str, str] = dataclasses.field(default_factory=dict)
    authority_host: str = DEFAULT_AUTHORITY_HOST
    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    # The window `requests_per_minute` is counted in: the service's minute. Shorter only to scale time down in
    # tests and benchmarks (the demo tenant's window with it).
    rate_window_seconds: float = 60.0
    # None: partitions start at the oldest day the service still keeps, or the oldest stored day if earlier.
    start_date: dt.date | None = None
    demo: DemoSettings | None = None
    # The schedule and the sensors run by default whenever the daemon runs; `automation: false` in the tenants
    # file leaves them stopped (runs are then started by hand, or switched on in the UI).
    automation: bool = True
    # Where the tenant was defined, for messages: "tenant 'contoso' (line 4 of /etc/tenants.yaml)".
    origin: str = ""

    @property
    def uses_demo_tenant(self) -> bool:
        return self.api_url is None

    def mdca_settings(self, env: Mapping[str, str] | None = None) -> MdcaSettings:
        """The tenant's checked settings with the variables' values, for code that runs outside Dagster."""
        if self.api_url is None:
            raise ConfigError(f"{self.origin or self.name} is the demo tenant; it has no API settings")
        env = os.environ if env is None else env
        values = {field: env.get(name, "") for field, name in self.variables.items()}
        return MdcaSettings(
            api_url=self.api_url,
            authority_host=self.authority_host,
            requests_per_minute=self.requests_per_minute,
            variables=tuple(sorted(self.variables.items())),
            **values,
        )


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What the environment says: where data lives, and which tenants to read."""

    data_dir: Path
    tenants: tuple[TenantConfig, ...]
    tenants_file: Path | None = None
    # The dataset on object storage (ACTIVITY_DATA_URL, see storage.lake); None: under data_dir.
    data_url: str | None = None

    def tenant(self, name: str) -> TenantConfig:
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        raise ConfigError(f"no tenant named {name!r}; configured: {', '.join(t.name for t in self.tenants)}")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What a configuration is read from, as a value: the environment and the tenants file's version (its
    modification time), so that code can tell whether the configuration may have changed without reading it."""

    environment: tuple[tuple[str, str], ...]
    tenants_file_version: int


def snapshot(env: Mapping[str, str] | None = None) -> Snapshot:
    """The environment (default: os.environ) and the tenants file's version, now."""
    env = os.environ if env is None else env
    tenants_file = (env.get("ACTIVITY_TENANTS_FILE") or "").strip()
    try:
        version = os.stat(tenants_file).st_mtime_ns if tenants_file else 0
    except OSError:
        version = -1  # load() says what is wrong with it
    return Snapshot(tuple(sorted(env.items())), version)


def load(env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Read ACTIVITY_*, MDCA_* and the tenants file (default: os.environ). Raises ConfigError naming what to fix."""
    env = os.environ if env is None else env

    def get(name: str) -> str:
        return (env.get(name) or "").strip()

    data_url = None
    if get("ACTIVITY_DATA_URL"):
        from activity_pipeline.storage.delta import DataUrlError, parse_data_url

        try:
            data_url = parse_data_url(get("ACTIVITY_DATA_URL"))
        except DataUrlError as exc:
            raise ConfigError(str(exc)) from None
    data_dir = get("ACTIVITY_DATA_DIR")
    start_date = _date(get("ACTIVITY_START_DATE"), "ACTIVITY_START_DATE")
    rate = _requests_per_minute(get("MDCA_REQUESTS_PER_MINUTE"))
    tenants_file = get("ACTIVITY_TENANTS_FILE")
    if tenants_file:
        path = Path(tenants_file).expanduser().resolve()
        tenants = read_tenants_file(path, env, default_start_date=start_date, default_rate=rate)
    else:
        path = None
        tenants = (_tenant_from_variables(get, start_date, rate),)
    from activity_pipeline.storage.layout import StorageLocationError, check_root

    root = Path(data_dir or DEFAULT_DATA_DIR).expanduser().resolve()
    try:
        check_root(root)
    except StorageLocationError as exc:
        raise ConfigError(str(exc)) from None
    return PipelineConfig(
        data_dir=root,
        tenants=tenants,
        tenants_file=path,
        data_url=data_url,
    )


def _tenant_from_variables(get: Any, start_date: dt.date | None, rate: int) -> TenantConfig:
    name = get("MDCA_TENANT_NAME") or DEFAULT_TENANT_NAME
    if not TENANT_NAME.fullmatch(name):
        raise ConfigError(
            f"MDCA_TENANT_NAME must be a lower-case name like contoso ([a-z][a-z0-9_]{{0,39}}: a letter, then up to "
            f"39 letters, digits or underscores); got {name!r}"
        )
    origin = f"tenant {name!r} (the MDCA_* variables)"
    api_url = get("MDCA_API_URL")
    if not api_url:
        return TenantConfig(name, start_date=start_date, requests_per_minute=rate, demo=DemoSettings(), origin=origin)
    variables = {field: var for field, var in TENANT_VARIABLES.items() if get(var) and field != "api_url"}
    authority = variables.pop("authority_host", None)
    return TenantConfig(
        name,
        # Checked here, as the tenants file's `api_url` is, so that a wrong URL stops loading, not the first run.
        api_url=check_base_url(api_url),
        variables=variables,
        authority_host=get(authority) if authority else DEFAULT_AUTHORITY_HOST,
        requests_per_minute=rate,
        start_date=start_date,
        origin=origin,
    )


def read_tenants_file(
    path: Path,
    env: Mapping[str, str],
    *,
    default_start_date: dt.date | None = None,
    default_rate: int = DEFAULT_REQUESTS_PER_MINUTE,
) -> tuple[TenantConfig, ...]:
    """The tenants of ACTIVITY_TENANTS_FILE, checked, before anything is asked of any tenant.

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
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            document = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(document, dict) or set(document) != {"tenants"} or not isinstance(document["tenants"], list):
        raise ConfigError(f"{where} must hold one key, `tenants:`, with a list of tenants under it (see the README)")
    if not document["tenants"]:
        raise ConfigError(f"{where} lists no tenants; add at least one under `tenants:`")
    lines = [item.start_mark.line + 1 for item in root.value[0][1].value]
    tenants: list[TenantConfig] = []
    seen: dict[str, int] = {}
    for entry, line in zip(document["tenants"], lines, strict=True):
        tenant = _file_tenant(entry, line, path, env, default_start_date, default_rate)
        if tenant.name in seen:
            raise ConfigError(
                f"{where}: tenant {tenant.name!r} at line {line} is already defined at line {seen[tenant.name]}; "
                "names must be unique (they key assets, pools and folders)"
            )
        seen[tenant.name] = line
        tenants.append(tenant)
    return tuple(tenants)


def _file_tenant(
    entry: Any, line: int, path: Path, env: Mapping[str, str], start_date: dt.date | None, rate: int
) -> TenantConfig:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}, line {line}: each tenant is a mapping that starts with `- name: ...`")
    raw_name = entry.get("name")
    name = raw_name if isinstance(raw_name, str) else ""
    valid = bool(TENANT_NAME.fullmatch(name))
    who = f"tenant {name!r} (line {line} of {path})" if valid else f"the tenant at line {line} of {path}"

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{who}: {problem}")

    if not valid:
        shown = "missing" if raw_name is None else repr(raw_name)
        raise fail(
            f"`name` must be a lower-case name like contoso (a letter, then up to 39 letters, digits or "
            f"underscores; it is used in asset keys, pools and folder names); got {shown}"
        )
    for key in entry:
        if key in FILE_KEYS:
            continue
        if isinstance(key, str) and _SECRET_LIKE.search(key):
            raise fail(
                f"unknown key `{key}`. Secrets are never written in this file: put the secret in an environment "
                "variable and name that variable with `token_env` (or `client_secret_env`)"
            )
        close = difflib.get_close_matches(str(key), FILE_KEYS, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise fail(f"unknown key `{key}`{hint}; the keys a tenant takes are: {', '.join(FILE_KEYS)}")
    variables: dict[str, str] = {}
    for key, field in FILE_VARIABLE_KEYS.items():
        if key not in entry:
            continue
        variable = entry[key]
        if not isinstance(variable, str) or not _VARIABLE_NAME.fullmatch(variable) or _looks_like_secret(variable):
            # Not repeated in the message: it may be the secret itself.
            raise fail(
                f"`{key}` must name an environment variable (like CONTOSO_MDCA_TOKEN), not hold a value; the value "
                "given looks like a secret. Put the secret in a variable and write the variable's name here"
            )
        if not (env.get(variable) or "").strip():
            raise fail(
                f"`{key}` names the variable {variable}, which is not set (or is empty); set it, or fix the name"
            )
        variables[field] = variable
    entra = [k for k in FILE_VARIABLE_KEYS if k != "token_env" and k in entry]
    demo = entry.get("demo")
    if "api_url" in entry and demo is not None:
        raise fail("give either `api_url` (a real tenant) or `demo` (the built-in demo tenant), not both")
    if demo is not None:
        if variables:
            raise fail("a `demo` tenant takes no credentials; remove the *_env keys")
        settings = _demo_settings(demo, fail)
        api_url = None
    else:
        if "api_url" not in entry:
            raise fail("`api_url` is missing: the portal's URL, like https://contoso.eu2.portal.cloudappsecurity.com")
        try:
            api_url = check_base_url(str(entry["api_url"]), variable="`api_url`")
        except ConfigError as exc:
            raise fail(str(exc)) from None
        settings = None
        if "token_env" in entry and entra:
            raise fail(
                f"both kinds of credentials are given (`token_env` and `{'`, `'.join(entra)}`); keep one: a legacy "
                "API token, or an Entra ID application"
            )
        if not variables:
            raise fail(
                "no credentials: add `token_env` (a variable holding a legacy API token), or `tenant_id_env`, "
                "`client_id_env` and `client_secret_env` (an Entra ID application with Investigation.read)"
            )
        if entra and len(entra) < 3:
            missing = [k for k in FILE_VARIABLE_KEYS if k != "token_env" and k not in entry]
            raise fail(f"Entra ID credentials are incomplete: add `{'`, `'.join(missing)}`")
    authority = entry.get("authority_host", DEFAULT_AUTHORITY_HOST)
    if "authority_host" in entry:
        try:
            authority = check_base_url(str(authority), variable="`authority_host`")
        except ConfigError as exc:
            raise fail(str(exc)) from None
    tenant_rate = entry.get("requests_per_minute", rate)
    if isinstance(tenant_rate, bool) or not isinstance(tenant_rate, int) or not 0 <= tenant_rate <= 6000:
        raise fail(
            "`requests_per_minute` must be a whole number from 1 to 6000 (the service allows 30), or 0 for no "
            f"client-side limit; got {tenant_rate!r}"
        )
    window = entry.get("rate_window_seconds", 60)
    if isinstance(window, bool) or not isinstance(window, int | float) or not 1 <= window <= 3600:
        raise fail(
            "`rate_window_seconds` must be a number of seconds from 1 to 3600; the service counts its limit in 60 "
            f"(shorter only to scale time in tests and benchmarks); got {window!r}"
        )
    automation = entry.get("automation", True)
    if not isinstance(automation, bool):
        raise fail(
            "`automation` must be true (the default: the schedule and the sensors run whenever the daemon runs) or "
            f"false (they stay stopped until switched on in the UI); got {automation!r}"
        )
    first = entry.get("start_date", start_date)
    if isinstance(first, str):
        try:
            first = _date(first, "`start_date`")
        except ConfigError as exc:
            raise fail(str(exc)) from None
    if isinstance(first, dt.datetime) or not (first is None or isinstance(first, dt.date)):
        raise fail(f"`start_date` must be a date like 2026-06-01; got {first!r}")
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
        origin=who,
    )


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


def _date(text: str, what: str) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{what} must be a date like 2026-06-01 (YYYY-MM-DD), got {text!r}") from None


def _requests_per_minute(text: str) -> int:
    if not text:
        return DEFAULT_REQUESTS_PER_MINUTE
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"MDCA_REQUESTS_PER_MINUTE must be a whole number like 30, got {text!r}") from None


def main() -> int:
    """`python -m activity_pipeline.config`: check the configuration; print each tenant's name, one a line."""
    import sys

    try:
        settings = load()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(t.name for t in settings.tenants))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
