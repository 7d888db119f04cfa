"""Errors fail fast and say what to check; credentials never leak; both kinds of credentials work."""

from __future__ import annotations

import logging
import time

import pytest
import requests

from activity_pipeline.demo_tenant.data import DAY_MS, day_start_ms
from activity_pipeline.demo_tenant.entra import EntraStandIn
from activity_pipeline.mdca import (
    AuthenticationError,
    BadRequestError,
    EndpointError,
    MdcaClient,
    MdcaSettings,
    PermissionDeniedError,
    RateLimiter,
    RetriesExhaustedError,
    RetryPolicy,
    Secret,
)
from activity_pipeline.mdca.auth import EntraAuth
from activity_pipeline_testing.helpers import (
    DAYS,
    FAST_RETRY,
    FORBIDDEN_TOKEN,
    TOKEN,
    client_for,
    free_port,
    scan_day,
    serve,
)

TENANT_GUID = "3f2b6c1e-8d4a-4e7b-9c15-0a6d2e4f8b71"
CLIENT_ID = "6a1d7f0e-2b3c-4d5e-8f90-1a2b3c4d5e6f"
CLIENT_SECRET = "Qx8~demo-client-secret-value-9f3k"


def test_400_fails_fast_and_repeats_the_servers_message(server):
    client = client_for(server.url)
    before = server.stats.requests
    with pytest.raises(BadRequestError, match="Unknown filter 'colour'") as info:
        client.count(day_start_ms(DAYS[0]), day_start_ms(DAYS[0]) + DAY_MS, {"colour": {"eq": ["red"]}})
    assert info.value.status == 400
    assert server.stats.requests - before == 1


def test_401_fails_fast_and_names_the_variable_to_check(server):
    client = client_for(server.url, token="wrong-token-value")
    before = server.stats.requests
    with pytest.raises(AuthenticationError) as info:
        scan_day(client, DAYS[0])
    message = str(info.value)
    assert "rejected the credentials" in message and "MDCA_API_TOKEN" in message and "Invalid token" in message
    assert "wrong-token-value" not in message
    assert server.stats.requests - before == 1


def test_403_fails_fast_and_names_the_permission(server):
    client = client_for(server.url, token=FORBIDDEN_TOKEN)
    with pytest.raises(PermissionDeniedError, match=r"Investigation\.read") as info:
        scan_day(client, DAYS[0])
    assert FORBIDDEN_TOKEN not in str(info.value)


def test_retries_give_up_with_status_attempts_and_path(tenant):
    server = serve(tenant, fault_rate=1.0, fault_kinds=("html_503",))
    try:
        client = client_for(server.url, retry=RetryPolicy(max_attempts=3, backoff_first=0.01, backoff_max=0.05))
        with pytest.raises(RetriesExhaustedError) as info:
            scan_day(client, DAYS[0])
        message = str(info.value)
        assert "after 3 attempts" in message and "HTTP 503" in message and "/api/v1/activities/" in message
        assert info.value.attempts == 3 and info.value.status == 503
        assert server.stats.requests == 3
        assert TOKEN not in message
    finally:
        server.stop()


def test_retries_are_capped_by_total_time_too(tenant):
    server = serve(tenant, fault_rate=1.0, fault_kinds=("html_502",), latency_ms=100)
    try:
        policy = RetryPolicy(max_attempts=1000, max_seconds=0.6, backoff_first=0.05, backoff_max=0.1)
        client = client_for(server.url, retry=policy)
        t0 = time.monotonic()
        with pytest.raises(RetriesExhaustedError, match="HTTP 502"):
            client.count(day_start_ms(DAYS[0]), day_start_ms(DAYS[0]) + DAY_MS)
        assert time.monotonic() - t0 < 3
    finally:
        server.stop()


def test_429_without_retry_after_backs_off_and_pauses_every_thread(tenant):
    server = serve(tenant, requests_per_minute=2, window_seconds=1.0, retry_after=False)
    try:
        limiter = RateLimiter(0)
        client = client_for(server.url, limiter=limiter)
        start = day_start_ms(DAYS[0])
        counts = [client.count(start, start + DAY_MS) for _ in range(5)]
        assert len(set(counts)) == 1
        assert client.stats.throttled >= 1
        assert client.stats.throttle_wait_seconds > 0
    finally:
        server.stop()


def test_the_token_never_appears_in_logs_errors_or_reprs(tenant, caplog):
    caplog.set_level(logging.DEBUG)
    server = serve(tenant, fault_rate=0.3, requests_per_minute=8, window_seconds=1.0, retry_after=False)
    outputs: list[str] = []
    try:
        client = client_for(server.url)
        outputs += [repr(client), repr(client.settings), str(client.settings), repr(client.auth)]
        ids, scanner = scan_day(client, DAYS[1], slices=2, expected_total=1)
        assert ids
        outputs.append(repr(scanner.stats))
        for bad in (client_for(server.url, token=FORBIDDEN_TOKEN), client_for(server.url, token=TOKEN + "x")):
            with pytest.raises(Exception) as info:  # any error: its text is what is checked
                scan_day(bad, DAYS[1])
            outputs += [str(info.value), repr(info.value)]
    finally:
        server.stop()
    outputs += [r.getMessage() for r in caplog.records]
    outputs += [str(r.args) for r in caplog.records]
    assert client.stats.retries > 0, "the run went through retries, whose logs are checked too"
    leaked = [o for o in outputs if TOKEN in o or FORBIDDEN_TOKEN in o]
    assert not leaked


@pytest.fixture
def entra(server):
    with EntraStandIn(server, TENANT_GUID, CLIENT_ID, CLIENT_SECRET) as stand_in:
        yield stand_in


def _entra_client(url: str, entra: EntraStandIn, secret: str = CLIENT_SECRET) -> MdcaClient:
    settings = MdcaSettings(
        api_url=url,
        tenant_id=TENANT_GUID,
        client_id=CLIENT_ID,
        client_secret=Secret(secret),
        authority_host=entra.authority_host,
        requests_per_minute=0,
    )
    http = requests.Session()
    # REQUESTS_CA_BUNDLE in the environment would otherwise win over session.verify (a requests quirk).
    http.trust_env = False
    http.verify = entra.ca_path
    auth = EntraAuth(TENANT_GUID, CLIENT_ID, Secret(secret), entra.authority_host, http_client=http)
    return MdcaClient(settings, limiter=RateLimiter(0), auth=auth, retry=FAST_RETRY)


def test_entra_app_credentials_scan_with_a_cached_bearer_token(server, tenant, entra, caplog):
    caplog.set_level(logging.DEBUG)
    client = _entra_client(server.url, entra)
    ids, _ = scan_day(client, DAYS[0], slices=2)
    assert set(ids) == tenant.truth_ids(DAYS[0])
    assert client.stats.requests >= 3
    assert entra.issued == 1, "one token serves every request until it nears expiry"
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert CLIENT_SECRET not in logs and CLIENT_SECRET not in repr(client.auth)


def test_entra_token_is_refreshed_before_it_expires(server, entra):
    # msal treats a token with under five minutes left as expired: 302 s gives two seconds of use.
    entra.expires_in = 302
    client = _entra_client(server.url, entra)
    start = day_start_ms(DAYS[0])
    client.count(start, start + DAY_MS)
    client.count(start, start + DAY_MS)
    assert entra.issued == 1
    time.sleep(2.2)
    client.count(start, start + DAY_MS)
    assert entra.issued == 2


def test_tls_verification_failure_fails_fast(server, entra):
    settings = MdcaSettings(
        api_url=server.url,
        tenant_id=TENANT_GUID,
        client_id=CLIENT_ID,
        client_secret=Secret(CLIENT_SECRET),
        authority_host=entra.authority_host,
    )
    # The default trust store does not know the stand-in's certificate.
    client = MdcaClient(settings, limiter=RateLimiter(0), retry=FAST_RETRY)
    t0 = time.monotonic()
    with pytest.raises(EndpointError, match="TLS verification failed"):
        client.count(day_start_ms(DAYS[0]), day_start_ms(DAYS[0]) + DAY_MS)
    assert time.monotonic() - t0 < 5


def test_entra_wrong_secret_fails_with_a_message_that_names_the_variables(server, entra):
    client = _entra_client(server.url, entra, secret="not-the-secret-7731")
    before = server.stats.requests
    with pytest.raises(AuthenticationError) as info:
        client.count(day_start_ms(DAYS[0]), day_start_ms(DAYS[0]) + DAY_MS)
    message = str(info.value)
    assert "invalid_client" in message and "MDCA_CLIENT_SECRET" in message and CLIENT_ID in message
    assert "not-the-secret-7731" not in message
    assert server.stats.requests == before, "nothing was sent to the API without a token"


def test_a_host_that_does_not_resolve_fails_at_once_naming_the_host():
    client = MdcaClient(MdcaSettings(api_url="https://tenant-typo.invalid", api_token="t"), retry=FAST_RETRY)
    t0 = time.monotonic()
    with pytest.raises(EndpointError) as info:
        client.count(day_start_ms(DAYS[0]), day_start_ms(DAYS[0]) + DAY_MS)
    assert time.monotonic() - t0 < 10
    assert "tenant-typo.invalid" in str(info.value) and "does not resolve" in str(info.value)
    assert "MDCA_API_URL" in str(info.value)
    assert client.stats.retries == 0


def test_a_refused_connection_on_the_first_request_fails_at_once():
    port = free_port()
    client = client_for(f"http://127.0.0.1:{port}")
    with pytest.raises(EndpointError, match=f"port {port} refused the connection"):
        client.count(day_start_ms(DAYS[0]), day_start_ms(DAYS[0]) + DAY_MS)
    assert client.stats.retries == 0


def test_once_the_api_has_answered_a_lost_connection_is_retried(tenant):
    server = serve(tenant)
    client = client_for(server.url, retry=RetryPolicy(max_attempts=3, backoff_first=0.01, backoff_max=0.05))
    start = day_start_ms(DAYS[0])
    assert client.count(start, start + DAY_MS) == tenant.truth_count(DAYS[0])
    server.stop()  # the service goes away mid-scan: an outage, not a configuration error
    with pytest.raises(RetriesExhaustedError, match="after 3 attempts"):
        client.count(start, start + DAY_MS)
    assert client.stats.retries == 2


@pytest.mark.parametrize("retry_after", [True, False])
def test_a_429_that_never_ends_reports_its_own_wait_truly_and_whether_the_service_asked(tenant, retry_after):
    server = serve(tenant, requests_per_minute=1, window_seconds=3600.0, retry_after=retry_after)
    policy = RetryPolicy(max_attempts=50, max_seconds=4, backoff_first=0.01, backoff_max=1.0, throttle_default=0.5)
    try:
        client = client_for(server.url, retry=policy)
        start = day_start_ms(DAYS[0])
        client.count(start, start + DAY_MS)  # the one request of the hour
        began = time.monotonic()
        with pytest.raises(RetriesExhaustedError) as caught:
            client.count(start, start + DAY_MS)
        elapsed = time.monotonic() - began
    finally:
        server.stop()
    message = str(caught.value)
    said = "for as long as its Retry-After said" if retry_after else "backing off (it sent no Retry-After)"
    assert said in message, message
    waited = float(message.split("s of it waiting")[0].rsplit(", ", 1)[1])
    assert 1 <= waited <= elapsed + 0.5, (waited, elapsed)


def test_a_long_wait_after_a_429_is_announced_at_once_and_again_while_it_lasts(tenant):
    server = serve(tenant, requests_per_minute=1, window_seconds=4.0, retry_after=True)
    policy = RetryPolicy(max_attempts=5, max_seconds=30, backoff_first=0.01, throttle_default=0.5, notice_every=1.0)
    lines: list[str] = []

    class Log:
        def info(self, text: str) -> None:
            lines.append(text)

    try:
        client = client_for(server.url, retry=policy)
        client.log = Log()
        start = day_start_ms(DAYS[0])
        first = client.count(start, start + DAY_MS)
        assert client.count(start, start + DAY_MS) == first, "it waited out the 429 and got the answer"
    finally:
        server.stop()
    announced = [line for line in lines if line.startswith("retrying after HTTP 429")]
    still = [line for line in lines if line.startswith("still waiting to retry")]
    assert announced and len(still) >= 2, lines
    assert TOKEN not in " ".join(lines)
