"""Settings are checked before any request, with messages that say which variable to fix."""

from __future__ import annotations

import pickle

import pytest

from activity_pipeline.mdca import ConfigError, MdcaSettings, RateLimiter, Secret

URL = "https://contoso.eu2.portal.cloudappsecurity.com"


def settings(**env: str) -> MdcaSettings:
    return MdcaSettings.from_env(env)


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
        ({}, "MDCA_API_URL is not set"),
    ],
)
def test_bad_settings_get_a_message_that_names_the_fix(env, message):
    with pytest.raises(ConfigError) as info:
        settings(**env)
    assert message in str(info.value)
    for name in ("MDCA_API_TOKEN", "MDCA_CLIENT_SECRET"):
        if env.get(name) and len(env[name]) > 2:
            assert env[name] not in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "http://localhost:1", "http://[::1]:8080"])
def test_plain_http_is_allowed_for_loopback_only(url):
    assert settings(MDCA_API_URL=url, MDCA_API_TOKEN="t").api_url == url


def test_secrets_do_not_pickle_or_print():
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in f"{secret}"
    with pytest.raises(TypeError):
        pickle.dumps(secret)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_limiter_allows_n_per_rolling_window_then_waits():
    clock = FakeClock()
    limiter = RateLimiter(30, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(61):
        limiter.acquire()
        sent.append(clock.now)
    # Any 60-second window holds at most 30 sends.
    assert all(sum(1 for t in sent if a <= t < a + 60) <= 30 for a in sent)
    assert sent[30] == 60.0 and sent[60] == 120.0


def test_rate_limiter_pause_holds_everyone_back():
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    limiter.pause(7.5)
    assert limiter.acquire() == 7.5
    assert limiter.acquire() == 0.0
