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
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from activity_pipeline import privacy
from activity_pipeline.alerts import Destination
from activity_pipeline.config.model import (
    DEFAULT_DATA_DIR,
    DEFAULT_TENANT_NAME,
    TENANT_NAME,
    TENANT_VARIABLES,
    DemoSettings,
    PipelineConfig,
    TenantConfig,
    parse_date,
)
from activity_pipeline.config.tenants_file import (
    FILE_KEYS,
    FILE_VARIABLE_KEYS,
    intraday_minutes,
    mistakes,
    read_file,
    read_tenants_file,
)
from activity_pipeline.errors import ConfigError
from activity_pipeline.mdca.filters import FilterError, check_filters
from activity_pipeline.mdca.settings import DEFAULT_AUTHORITY_HOST, DEFAULT_REQUESTS_PER_MINUTE, check_base_url

__all__ = [
    "DEFAULT_DATA_DIR", "DEFAULT_TENANT_NAME", "FILE_KEYS", "FILE_VARIABLE_KEYS", "TENANT_NAME", "TENANT_VARIABLES",
    "DemoSettings", "PipelineConfig", "Snapshot", "TenantConfig", "load", "read_file", "read_tenants_file", "snapshot",
]  # fmt: skip


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


# The tenants component's own YAML: its `attributes:` may list the tenants (and alerts) as a tenants file would.
COMPONENT_YAML = Path(__file__).resolve().parent.parent / "defs" / "tenants" / "defs.yaml"


def carries_tenants(path: Path) -> bool:
    """Whether the component YAML at `path` lists tenants (its `attributes:` has `tenants:`)."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    attributes = document.get("attributes") if isinstance(document, dict) else None
    return isinstance(attributes, dict) and "tenants" in attributes


def with_component_tenants(env: Mapping[str, str], folder: Path | str | None = None) -> dict[str, str]:
    """`env`, reading the tenants from the component YAML in `folder` (default: the project's) when it lists any
    and ACTIVITY_TENANTS_FILE is not set."""
    path = Path(folder) / "defs.yaml" if folder is not None else COMPONENT_YAML
    if (env.get("ACTIVITY_TENANTS_FILE") or "").strip() or not carries_tenants(path):
        return dict(env)
    return {**env, "ACTIVITY_TENANTS_FILE": str(path)}


def load(env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Read ACTIVITY_*, MDCA_* and the tenants (ACTIVITY_TENANTS_FILE, else the component YAML's `tenants:`),
    default: os.environ. Raises ConfigError naming what to fix."""
    env = with_component_tenants(os.environ if env is None else env)

    def get(name: str) -> str:
        return (env.get(name) or "").strip()

    # Each part is checked whatever the others hold: every mistake is named in one go, each on its own line.
    problems: list[str] = []

    def checked(read: Any, *args: Any) -> Any:
        try:
            return read(*args)
        except ConfigError as exc:
            problems.extend(_lines(exc))
            return None

    # Private from the first byte: whatever this process's umask, what it writes from here on is its owner's
    # (a group's too, on purpose: ACTIVITY_DATA_GROUP). See privacy.py.
    group = get("ACTIVITY_DATA_GROUP") or None
    if group is not None and checked(privacy.group_id, group) is None:
        group = None
    privacy.apply(group)
    data_url = None
    if get("ACTIVITY_DATA_URL"):
        from activity_pipeline.storage.dataset import DataUrlError, parse_data_url

        try:
            data_url = parse_data_url(get("ACTIVITY_DATA_URL"))
        except DataUrlError as exc:
            problems.append(str(exc))
    data_dir = get("ACTIVITY_DATA_DIR")
    start_date = checked(parse_date, get("ACTIVITY_START_DATE"), "ACTIVITY_START_DATE")
    rate = checked(_requests_per_minute, get("MDCA_REQUESTS_PER_MINUTE"))
    rate = DEFAULT_REQUESTS_PER_MINUTE if rate is None else rate
    tenants_file = get("ACTIVITY_TENANTS_FILE")
    alerts: tuple[Destination, ...] = ()
    path = None
    tenants: tuple[TenantConfig, ...] = ()
    if tenants_file:
        path = Path(tenants_file).expanduser().resolve()
        found = checked(lambda: read_file(path, env, default_start_date=start_date, default_rate=rate))
        if found is not None:
            tenants, alerts = found
    else:
        tenant = checked(_tenant_from_variables, env, start_date, rate)
        tenants = (tenant,) if tenant is not None else ()
    from activity_pipeline.storage.layout import StorageLocationError, check_root

    root = Path(data_dir or DEFAULT_DATA_DIR).expanduser().resolve()
    try:
        check_root(root)
    except StorageLocationError as exc:
        problems.append(str(exc))
    else:
        checked(privacy.share_root, root, group)
    if problems:
        raise ConfigError(mistakes(problems))
    return PipelineConfig(
        data_dir=root,
        tenants=tenants,
        tenants_file=path,
        data_url=data_url,
        alerts=alerts,
        data_group=group,
    )


def _lines(exc: ConfigError) -> list[str]:
    """The mistakes an error names (`tenants_file.mistakes` puts several in one)."""
    lines = str(exc).splitlines()
    return [line.strip() for line in lines[1:]] if len(lines) > 1 and " mistakes, " in lines[0] else [str(exc)]


def _tenant_from_variables(env: Mapping[str, str], start_date: dt.date | None, rate: int) -> TenantConfig:
    """The tenant of the MDCA_* variables, checked whole (every mistake named, ConfigError one a line)."""

    def get(name: str) -> str:
        return (env.get(name) or "").strip()

    problems: list[str] = []
    name = get("MDCA_TENANT_NAME") or DEFAULT_TENANT_NAME
    if not TENANT_NAME.fullmatch(name):
        problems.append(
            f"MDCA_TENANT_NAME must be a lower-case name like contoso ([a-z][a-z0-9_]{{0,39}}: a letter, then up to "
            f"39 letters, digits or underscores); got {name!r}"
        )
    origin = f"tenant {name!r} (the MDCA_* variables)"
    filters: dict[str, Any] = {}
    intraday = 0
    try:
        filters = _env_filters(get("MDCA_FILTERS"))
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        intraday = intraday_minutes(get("MDCA_INTRADAY_MINUTES"), "MDCA_INTRADAY_MINUTES")
    except ConfigError as exc:
        problems.append(str(exc))
    api_url = get("MDCA_API_URL")
    problems += _credential_mistakes(env, bool(api_url))
    if api_url:
        try:
            api_url = check_base_url(api_url)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(mistakes(problems))
    if not api_url:
        return TenantConfig(
            name, start_date=start_date, requests_per_minute=rate, demo=DemoSettings(), filters=filters,
            intraday_minutes=intraday, origin=origin,
        )  # fmt: skip
    variables = {field: var for field, var in TENANT_VARIABLES.items() if get(var) and field != "api_url"}
    authority = variables.pop("authority_host", None)
    return TenantConfig(
        name,
        # Checked above, as the tenants file's `api_url` is, so that a wrong URL stops loading, not the first run.
        api_url=api_url,
        variables=variables,
        authority_host=get(authority) if authority else DEFAULT_AUTHORITY_HOST,
        requests_per_minute=rate,
        start_date=start_date,
        filters=filters,
        intraday_minutes=intraday,
        origin=origin,
    )


_TOKEN, _ENTRA = "MDCA_API_TOKEN", ("MDCA_TENANT_ID", "MDCA_CLIENT_ID", "MDCA_CLIENT_SECRET")


def _credential_mistakes(env: Mapping[str, str], real: bool) -> list[str]:
    """What is wrong with the credential variables (set, not empty, one kind, complete), without a request and
    without repeating a value. `real`: MDCA_API_URL is set (else the built-in demo tenant runs, and takes none)."""
    given = [v for v in (_TOKEN, *_ENTRA) if v in env]
    empty = [v for v in given if not env[v].strip()]
    filled = [v for v in given if v not in empty]
    found = [f"{v} is set but empty: set it to the credential, or unset it" for v in empty]
    if not real:
        if filled:
            found.append(
                f"{', '.join(filled)} {'is' if len(filled) == 1 else 'are'} set but MDCA_API_URL is not, so the "
                "built-in demo tenant would run and the credentials go unused: set MDCA_API_URL to the tenant's "
                "portal URL, or unset them"
            )
        return found
    entra = [v for v in _ENTRA if v in filled]
    if _TOKEN in filled and entra:
        found.append(
            f"Both kinds of credentials are set: {_TOKEN} and {', '.join(entra)}. Set only one kind: the legacy API "
            f"token, or the Entra ID application ({', '.join(_ENTRA)})."
        )
    elif entra and len(entra) < len(_ENTRA):
        missing = [v for v in _ENTRA if v not in filled]
        found.append(f"Entra ID credentials are incomplete: {', '.join(entra)} set but {', '.join(missing)} missing.")
    elif not filled and not empty:
        found.append(
            f"MDCA_API_URL is set but no credentials are: set {_TOKEN} to a legacy API token, or MDCA_TENANT_ID, "
            "MDCA_CLIENT_ID and MDCA_CLIENT_SECRET to an Entra ID application with Investigation.read"
        )
    return found


def _env_filters(text: str) -> dict[str, dict[str, Any]]:
    """MDCA_FILTERS: the tenant's filters as one JSON object, as the tenants file's `filters:` holds them."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f'MDCA_FILTERS must be a JSON object like {{"service": {{"neq": [20893]}}}}: {exc.msg} at character '
            f"{exc.pos + 1}"
        ) from None
    try:
        return check_filters(value)
    except FilterError as exc:
        raise ConfigError(f"MDCA_FILTERS: {exc}") from None


def _requests_per_minute(text: str) -> int:
    if not text:
        return DEFAULT_REQUESTS_PER_MINUTE
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"MDCA_REQUESTS_PER_MINUTE must be a whole number like 30, got {text!r}") from None


def main(argv: list[str] | None = None, probe: Any = None) -> int:
    """`python -m activity_pipeline.config [--names]`: check the configuration, every mistake at once (exit 2); print
    each tenant, one a line: its name, whether it is a built-in demo tenant (synthetic activities), and the API
    filters it collects under when it has any. `--names`: the names alone, for scripts. `probe(tenant)` -> (ok, text)
    adds each real tenant's result to its line (`activity_pipeline.probe`); exit 1 when any fails."""
    import sys

    from activity_pipeline.mdca.filters import describe

    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = load()
    except ConfigError as exc:
        lines = _lines(exc)
        print(f"configuration error{'s' if len(lines) > 1 else ''}:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        return 2
    failed = 0
    for tenant in settings.tenants:
        if "--names" in argv:
            print(tenant.name)
            continue
        shown = [tenant.name]
        if tenant.uses_demo_tenant:
            shown.append("demo tenant: synthetic activities, served on 127.0.0.1 while a run goes")
        if tenant.filters:
            shown.append(f"filters: {describe(tenant.filters)}")
        if probe is not None and not tenant.uses_demo_tenant:
            ok, said = probe(tenant)
            failed += not ok
            shown.append(said)
        print("\t".join(shown), flush=True)
    return 1 if failed else 0
