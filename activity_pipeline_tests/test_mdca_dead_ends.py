"""Dead ends fail in seconds with a message naming the cause and the fix; outages end within their budget and say
how long they waited; nothing a server echoes back reaches a message. Against hostile servers on 127.0.0.1."""

from __future__ import annotations

import logging
import time

import pytest

from activity_pipeline.demo_tenant.data import DAY_MS, day_start_ms
from activity_pipeline.mdca import (
    AuthenticationError,
    BadRequestError,
    EndpointError,
    MdcaHTTPError,
    PermissionDeniedError,
    ProtocolError,
    RetriesExhaustedError,
    RetryPolicy,
    ScanStalledError,
)
from activity_pipeline.mdca.redact import redact
from activity_pipeline_testing.helpers import DAYS, TOKEN, client_for, scan_day
from activity_pipeline_tests.hostile import HostileServer

START = day_start_ms(DAYS[0])
# Short budgets, so that the outage cases end in seconds; the figures in docs/failure-modes.md are the defaults'.
SHORT = RetryPolicy(max_attempts=50, max_seconds=3, backoff_first=0.05, backoff_max=0.5, throttle_default=0.1)


def _scan(server: HostileServer, **kw: object) -> tuple[BaseException, float]:
    client = client_for(server.url, **kw)
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        scan_day(client, DAYS[0])
    return info.value, time.monotonic() - started


@pytest.mark.parametrize(
    ("mode", "error", "words"),
    [
        ("html200", ProtocolError, ["200 with text/html", "not the Activities API's JSON", "MDCA_API_URL"]),
        ("data_not_list", ProtocolError, ["JSON that is not the Activities API's", "$.data"]),
        ("nan", ProtocolError, ["not valid JSON", "MDCA_API_URL"]),
        ("huge_length", ProtocolError, ["1,000,000,000,000,000 bytes", "MDCA_API_URL"]),
        ("no_cursor", ScanStalledError, ["hasNext but sent no nextQueryFilters"]),
    ],
)
def test_an_answer_that_is_not_the_apis_fails_at_once_naming_the_cause(mode, error, words):
    with HostileServer(mode) as server:
        exc, seconds = _scan(server)
        scan_requests = server.requests - 1
    assert isinstance(exc, error), repr(exc)
    for word in words:
        assert word in str(exc)
    assert scan_requests <= 2, "not retried"
    assert seconds < 10


def test_a_trickled_body_ends_at_the_requests_deadline():
    policy = RetryPolicy(read_timeout=2, request_deadline=3, max_seconds=5, backoff_first=0.05)
    with HostileServer("trickle", counts_ok=False) as server:
        client = client_for(server.url, retry=policy)
        started = time.monotonic()
        with pytest.raises(EndpointError, match="unfinished after 3s") as info:
            client.count(START, START + DAY_MS)
        seconds = time.monotonic() - started
    assert "nothing was retried" in str(info.value)
    assert 2.5 < seconds < 3 + 5


def test_a_server_that_never_answers_the_first_request_fails_after_one_read_timeout():
    policy = RetryPolicy(read_timeout=2, request_deadline=10, max_seconds=30)
    with HostileServer("silent", counts_ok=False) as server:
        client = client_for(server.url, retry=policy)
        started = time.monotonic()
        with pytest.raises(EndpointError, match="no answer within 2s") as info:
            client.count(START, START + DAY_MS)
        seconds = time.monotonic() - started
    assert "accepted the connection" in str(info.value) and "MDCA_API_URL" in str(info.value)
    assert server.requests == 1
    assert seconds < 2 + 5


def test_once_the_api_has_answered_silence_is_an_outage_retried_within_its_budget():
    policy = RetryPolicy(read_timeout=1, request_deadline=5, max_seconds=3, backoff_first=0.05, max_attempts=50)
    with HostileServer("silent") as server:
        client = client_for(server.url, retry=policy)
        assert client.count(START, START + DAY_MS) == 3
        started = time.monotonic()
        with pytest.raises(RetriesExhaustedError, match="no answer within 1s"):
            scan_day(client, DAYS[0])
        seconds = time.monotonic() - started
    assert server.requests >= 3, "retried"
    assert seconds < 3 + 5 + 5


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (200, ProtocolError),
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, MdcaHTTPError),
        (418, MdcaHTTPError),
        (429, RetriesExhaustedError),
        (500, RetriesExhaustedError),
        (502, RetriesExhaustedError),
        (503, RetriesExhaustedError),
        (504, RetriesExhaustedError),
    ],
)
def test_a_server_that_echoes_the_token_never_gets_it_into_a_message_or_log(status, error, caplog):
    """Also: an outage without end (429, 5xx) gives up within its budget and says how long it tried."""
    caplog.set_level(logging.DEBUG)
    with HostileServer(f"echo:{status}") as server:
        exc, seconds = _scan(server, retry=SHORT)
    assert isinstance(exc, error), repr(exc)
    if error is RetriesExhaustedError:
        assert f"HTTP {status}" in str(exc) and "attempts in" in str(exc) and "run the day again later" in str(exc)
        assert seconds < SHORT.max_seconds + 5
    else:
        assert seconds < 5, "no retry"
    texts = [str(exc), repr(exc), *(r.getMessage() for r in caplog.records)]
    assert not [t for t in texts if TOKEN in t]
    assert status == 200 or any("redacted" in t for t in texts), "the echo reached the messages, redacted"


def test_tls_to_a_plain_http_port_says_the_port_speaks_plain_http():
    with HostileServer("html200", counts_ok=True) as server:
        url = server.url.replace("http://", "https://")
        # The client refuses plain http:// only to hosts that are not loopback; https:// to loopback is allowed.
        with pytest.raises(EndpointError) as info:
            client_for(url).count(START, START + DAY_MS)
    assert "speaks plain HTTP" in str(info.value)
    assert "CA certificates" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ('{"authorization": "Token abcdefgh12345"}', "abcdefgh12345"),
        ("Authorization=Bearer eyJabc.def.ghi", "eyJabc"),
        ("header: Bearer A1b2C3d4E5f6G7h8", "A1b2C3d4E5f6G7h8"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature", "eyJhbGciOiJIUzI1NiJ9"),
        ("client_secret=Qx8~abc&grant_type=client_credentials", "Qx8~abc"),
        ("https://acct.blob.core.windows.net/c?sv=2024&sig=AbCdEf%2B123", "AbCdEf%2B123"),
        ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
    ],
)
def test_redaction_removes_credential_shaped_values(text, gone):
    assert gone not in redact(text)


def test_redaction_removes_the_configured_secret_wherever_it_stands():
    assert "my-secret-value" not in redact("x my-secret-valuey", secrets=["my-secret-value"])


def test_a_redirect_is_named_and_never_followed_with_the_credentials():
    with HostileServer("silent", counts_ok=False) as elsewhere:
        target = f"{elsewhere.url}/api/v1/activities/"
        with HostileServer("redirect", counts_ok=False, redirect_to=target) as server:
            error, seconds = _scan(server)
        reached = elsewhere.requests
    assert isinstance(error, MdcaHTTPError) and not isinstance(error, AuthenticationError)
    text = str(error)
    assert "redirect (HTTP 307)" in text and target in text and "not followed" in text
    assert f"If {elsewhere.url} is the tenant's portal, set MDCA_API_URL to it" in text, "names where it points"
    assert reached == 0, "nothing, the token least of all, went to the other address"
    assert TOKEN not in text and seconds < 10


@pytest.mark.parametrize(("status", "fix"), [(400, "filters"), (418, "check that MDCA_API_URL")])
def test_a_400_or_an_unknown_status_says_what_to_check(status, fix):
    with HostileServer(f"echo:{status}", counts_ok=False) as server:
        error, _ = _scan(server)
    assert fix in str(error) and "Nothing" in str(error)
