"""Settings are normalised and hold their secrets as `Secret`s that never print."""

from __future__ import annotations

import pickle

import pytest

from activity_pipeline import config
from activity_pipeline.mdca import MdcaSettings, Secret

URL = "https://contoso.eu2.portal.cloudappsecurity.com"


def settings(**env: str) -> MdcaSettings:
    return config.load(env).tenants[0].mdca_settings(env)


def test_token_settings_normalise_the_url_and_hide_the_token():
    s = settings(MDCA_API_URL=URL + "/", MDCA_API_TOKEN="tok-123")
    assert s.api_url == URL and s.auth_kind == "token" and s.requests_per_minute == 30
    assert "tok-123" not in repr(s) and "tok-123" not in str(s)


def test_entra_settings_take_all_three_variables():
    s = settings(MDCA_API_URL=URL, MDCA_TENANT_ID="t", MDCA_CLIENT_ID="c", MDCA_CLIENT_SECRET="s3")
    assert s.auth_kind == "entra" and s.authority_host == "https://login.microsoftonline.com"
    gov = settings(
        MDCA_API_URL=URL,
        MDCA_TENANT_ID="t",
        MDCA_CLIENT_ID="c",
        MDCA_CLIENT_SECRET="s3",
        MDCA_AUTHORITY_HOST="https://login.microsoftonline.us",
    )
    assert gov.authority_host == "https://login.microsoftonline.us"
    assert "s3" not in repr(gov)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "http://localhost:1", "http://[::1]:8080"])
def test_plain_http_is_allowed_for_loopback_only(url):
    assert settings(MDCA_API_URL=url, MDCA_API_TOKEN="t").api_url == url


def test_secrets_do_not_pickle_or_print():
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in f"{secret}"
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_settings_take_plain_strings_and_keep_them_as_secrets():
    s = MdcaSettings(api_url=URL, api_token="tok-456")
    assert isinstance(s.api_token, Secret) and s.api_token.reveal() == "tok-456"
    assert "tok-456" not in repr(s)


def test_blank_credentials_count_as_unset():
    s = MdcaSettings(api_url=URL, api_token="t", tenant_id="  ", client_id="", client_secret="")
    assert s.auth_kind == "token" and s.tenant_id is None and s.client_secret is None
