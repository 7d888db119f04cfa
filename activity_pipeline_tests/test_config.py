"""The environment is read in one place; every variable's mistake gets a message that names the fix."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from activity_pipeline import config
from activity_pipeline.errors import ConfigError
from activity_pipeline.mdca import MdcaSettings

URL = "https://contoso.eu2.portal.cloudappsecurity.com"


def settings(**env: str) -> MdcaSettings:
    return config.load(env).tenants[0].mdca_settings(env)


def test_defaults_without_any_variable():
    c = config.load({})
    (tenant,) = c.tenants
    assert tenant.name == "default" and tenant.uses_demo_tenant and tenant.requests_per_minute == 30
    assert tenant.start_date is None, "unset: the partitions choose (defs/partitions.py)"
    assert c.data_dir == Path(config.DEFAULT_DATA_DIR).resolve()


def test_the_tenant_is_read_from_mdca_variables_and_noted_by_name():
    env = {"MDCA_API_URL": URL, "MDCA_API_TOKEN": "tok-1", "MDCA_REQUESTS_PER_MINUTE": "12", "MDCA_TENANT_NAME": "eu"}
    c = config.load(env)
    (tenant,) = c.tenants
    assert not tenant.uses_demo_tenant and tenant.name == "eu"
    assert tenant.variables == {"api_token": "MDCA_API_TOKEN"}
    assert "tok-1" not in repr(c), "the config names variables; it does not hold secrets"
    assert tenant.mdca_settings(env).requests_per_minute == 12


def test_a_start_date_that_is_not_a_date_names_the_variable():
    with pytest.raises(ConfigError, match="ACTIVITY_START_DATE must be a date like 2026-06-01"):
        config.load({"ACTIVITY_START_DATE": "June"})
    assert config.load({"ACTIVITY_START_DATE": "2026-07-01"}).tenants[0].start_date == dt.date(2026, 7, 1)


def test_a_tenant_name_that_cannot_key_assets_is_refused():
    with pytest.raises(ConfigError, match="MDCA_TENANT_NAME must be a lower-case name like contoso"):
        config.load({"MDCA_TENANT_NAME": "Contoso EU"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MDCA_API_URL": "contoso.portal.cloudappsecurity.com", "MDCA_API_TOKEN": "t"}, "must be an http(s) URL"),
        ({"MDCA_API_URL": "https://", "MDCA_API_TOKEN": "t"}, "must be an http(s) URL"),
        ({"MDCA_API_URL": "https://host:99999", "MDCA_API_TOKEN": "t"}, "not a valid URL"),
        ({"MDCA_API_URL": "ftp://contoso.example", "MDCA_API_TOKEN": "t"}, "must be an http(s) URL"),
        (
            {"MDCA_API_URL": "http://contoso.eu2.portal.cloudappsecurity.com", "MDCA_API_TOKEN": "t"},
            "plain http:// to contoso.eu2.portal.cloudappsecurity.com",
        ),
        ({"MDCA_API_URL": URL + "/api/v1/activities/", "MDCA_API_TOKEN": "t"}, "without a path"),
        ({"MDCA_API_URL": "https://user:pw@contoso.example", "MDCA_API_TOKEN": "t"}, "must not embed credentials"),
        ({"MDCA_API_URL": URL}, "no credentials are: set MDCA_API_TOKEN"),
        ({"MDCA_API_URL": URL, "MDCA_API_TOKEN": "t", "MDCA_CLIENT_ID": "c"}, "Both kinds of credentials"),
        ({"MDCA_API_URL": URL, "MDCA_TENANT_ID": "t", "MDCA_CLIENT_ID": "c"}, "MDCA_CLIENT_SECRET missing"),
        ({"MDCA_API_URL": URL, "MDCA_API_TOKEN": "t", "MDCA_REQUESTS_PER_MINUTE": "fast"}, "whole number like 30"),
        ({"MDCA_API_URL": URL, "MDCA_API_TOKEN": "t", "MDCA_REQUESTS_PER_MINUTE": "-1"}, "between 1 and 6000"),
        (
            {
                "MDCA_API_URL": URL,
                "MDCA_TENANT_ID": "t",
                "MDCA_CLIENT_ID": "c",
                "MDCA_CLIENT_SECRET": "s",
                "MDCA_AUTHORITY_HOST": "http://login.example",
            },
            "MDCA_AUTHORITY_HOST uses plain http://",
        ),
        ({}, "is the demo tenant; it has no API settings"),
    ],
)
def test_bad_settings_get_a_message_that_names_the_fix(env, message):
    with pytest.raises(ConfigError) as info:
        settings(**env)
    assert message in str(info.value)
    for name in ("MDCA_API_TOKEN", "MDCA_CLIENT_SECRET"):
        if env.get(name) and len(env[name]) > 2:
            assert env[name] not in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["s3://bucket/prefix", "az://container/prefix/", "abfss://container@account.dfs.core.windows.net/p", "gs://b/p"],
)
def test_an_object_store_url_is_taken(url):
    loaded = config.load({"ACTIVITY_DATA_URL": url, "ACTIVITY_DATA_DIR": "/srv/data"})
    assert loaded.data_url == url.rstrip("/") and loaded.data_dir == Path("/srv/data")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/srv/data", "the scheme (none) is not one of object storage's"),
        ("http://bucket/prefix", "the scheme http:// is not one of object storage's"),
        ("s3:///prefix", "names no bucket or container"),
        ("abfss://container/prefix", "names no storage account"),
        ("s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/p", "carries credentials or parameters"),
        ("az://container/p?sig=abcdef", "carries credentials or parameters"),
    ],
)
def test_a_bad_object_store_url_is_named_with_the_fix(url, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        config.load({"ACTIVITY_DATA_URL": url})
    for secret in ("wJalrXUtnFEMI", "sig=abcdef"):
        assert secret not in str(info.value)


def test_the_components_yaml_can_carry_the_tenants_read_by_the_same_parser(tmp_path):
    component = tmp_path / "defs.yaml"
    component.write_text(
        "type: activity_pipeline.components.tenants.ActivityTenants\n"
        "attributes:\n"
        "  tenants:\n"
        "    - {name: contoso, api_url: 'https://contoso.eu2.portal.cloudappsecurity.com', token_env: T}\n"
        "    - {name: lab, demo: true}\n"
    )
    env = config.with_component_tenants({"ACTIVITY_DATA_DIR": str(tmp_path), "T": "t"}, tmp_path)
    assert [t.name for t in config.load(env).tenants] == ["contoso", "lab"]
    # A tenants file named in the environment wins.
    other = tmp_path / "tenants.yaml"
    other.write_text("tenants:\n  - {name: only, demo: true}\n")
    env = config.with_component_tenants(
        {"ACTIVITY_DATA_DIR": str(tmp_path), "ACTIVITY_TENANTS_FILE": str(other)}, tmp_path
    )
    assert [t.name for t in config.load(env).tenants] == ["only"]
    # A mistake there names the component's file and line, as in a tenants file.
    component.write_text(component.read_text().replace("token_env: T", "token_env: T, keep_dayz: 3"))
    env = config.with_component_tenants({"ACTIVITY_DATA_DIR": str(tmp_path), "T": "t"}, tmp_path)
    with pytest.raises(ConfigError, match=rf"tenant 'contoso' \(line 4 of {component}\).*keep_dayz.*keep_days"):
        config.load(env)
