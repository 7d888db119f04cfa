"""Alerts: the tenants file's `alerts:` list, checked at load; a failed run, a failed blocking check and days about
to leave the retention, delivered to real receivers on 127.0.0.1 (HTTP for Teams, Slack and a webhook; SMTP with
STARTTLS for e-mail); never a credential in any of them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from activity_pipeline import config
from activity_pipeline.alerts import Alert, AlertDeliveryError
from activity_pipeline.components.alerting import build_alert_sensors, deliver, standing_alerts
from activity_pipeline.components.resources import ActivityStorage, resources_for
from activity_pipeline.definitions import build_defs
from activity_pipeline.demo_tenant import TenantSpec
from activity_pipeline.errors import ConfigError
from activity_pipeline_testing.helpers import DAYS, LosesRecords, broken, run_failure_context
from activity_pipeline_tests.receivers import HttpReceiver, smtp_receiver

SECRET_TOKEN = "tenant-token-7d1e-do-not-alert"
SMTP_PASSWORD = "smtp-password-93ab-do-not-alert"


@pytest.fixture
def http() -> HttpReceiver:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


def tenants_file(tmp_path: Path, api_url: str, alerts: str, start: str = "2026-01-01") -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n"
        f"  - name: contoso\n    api_url: {api_url}\n    token_env: CONTOSO_TOKEN\n    start_date: {start}\n"
        f"  - name: fabrikam\n    api_url: {api_url}\n    token_env: CONTOSO_TOKEN\n    start_date: {start}\n"
        f"alerts:\n{alerts}"
    )
    return path


def loaded(path: Path, **env: str) -> config.PipelineConfig:
    return config.load({"ACTIVITY_TENANTS_FILE": str(path), "CONTOSO_TOKEN": SECRET_TOKEN, **env})


WEBHOOKS = (
    "  - {kind: teams, url_env: TEAMS_URL, ui_url: 'http://dagster.example.com/'}\n"
    "  - {kind: slack, url_env: SLACK_URL}\n"
    "  - {kind: webhook, url_env: HOOK_URL, tenants: [fabrikam]}\n"
)


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        ("  - {kind: pager, url_env: X}\n", r"alert 1 \(line 11 of .*`kind` must be one of teams, slack, webhook"),
        ("  - {kind: slack, url: https://hooks.slack.com/x}\n", "unknown key `url` \\(did you mean `url_env`\\?\\).*"
         "Secrets are named by variable"),
        ("  - {kind: slack, url_env: UNSET_URL}\n", "names the variable UNSET_URL, which is not set"),
        ("  - {kind: slack, url_env: 'https://hooks.slack.com/services/T0/B0/xyz'}\n", "must name an environment"),
        ("  - {kind: teams, url_env: PLAIN_URL}\n", "PLAIN_URL must hold an https:// URL"),
        ("  - {kind: webhook, url_env: HOOK_URL, tenants: [contoso, nobody]}\n", "`tenants` names nobody, not defined"),
        ("  - {kind: email, smtp_host: smtp.example.com, to: [soc@example.com]}\n", "`from` must be an e-mail address"),
        ("  - {kind: email, smtp_host: h, from: a@b.co, to: x}\n", "`to` must be an e-mail address or a list"),
        ("  - {kind: email, smtp_host: h, from: a@b.co, to: s@b.co, username_env: HOOK_URL}\n",
         "give both `username_env` and `password_env`"),
        ("  kind: slack\n", "`alerts:` is a list of destinations"),
    ],
)  # fmt: skip
def test_each_mistake_in_the_alerts_list_stops_loading_with_what_to_fix(tmp_path, alerts, message):
    path = tenants_file(tmp_path, "https://contoso.eu2.portal.cloudappsecurity.com", alerts)
    env = {"HOOK_URL": "https://hooks.example.com/abc", "PLAIN_URL": "http://hooks.example.com/secret-path-123"}
    with pytest.raises(ConfigError, match=message) as info:
        loaded(path, **env)
    assert "secret-path-123" not in str(info.value) and "xyz" not in str(info.value), "no URL is repeated"


def test_the_alerts_list_loads_each_kind(tmp_path, http):
    alerts = WEBHOOKS + "  - {kind: email, smtp_host: smtp.example.com, from: p@example.com, to: soc@example.com}\n"
    env = {"TEAMS_URL": http.url("/teams"), "SLACK_URL": http.url("/slack"), "HOOK_URL": http.url("/hook")}
    settings = loaded(tenants_file(tmp_path, "https://contoso.eu2.portal.cloudappsecurity.com", alerts), **env)
    assert [d.kind for d in settings.alerts] == ["teams", "slack", "webhook", "email"]
    assert settings.alerts[0].ui_url == "http://dagster.example.com" and settings.alerts[3].smtp_port == 587
    assert settings.alerts[2].wants("fabrikam") and not settings.alerts[2].wants("contoso")
    assert all(SECRET_TOKEN not in repr(d) and "/teams" not in repr(d) for d in settings.alerts)


def _failed_run_alerts(tmp_path: Path, settings: config.PipelineConfig, day: dt.date) -> dg.SkipReason | None:
    """Materialize `day` of contoso (which fails), then evaluate the failed-runs sensor on that failure."""
    instance = dg.DagsterInstance.ephemeral()
    resources = resources_for(settings)
    defs = build_defs(resources, settings)
    job = defs.resolve_job_def("daily_activities")
    result = job.execute_in_process(partition_key=f"{day}|contoso", instance=instance, raise_on_error=False)
    assert not result.success
    (sensor,) = [s for s in defs.sensors if s.name == "activity_alerts_failed_runs"]
    return sensor(run_failure_context(instance, result.run_id, sensor.name))


def test_a_failed_run_alerts_every_destination_once_with_what_to_do_and_no_credential(tmp_path, http, monkeypatch):
    from activity_pipeline.demo_tenant import DemoTenant

    day = DAYS[0]
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=2_000))
    with broken(LosesRecords, tenant) as server, smtp_receiver(tmp_path, "pipeline", SMTP_PASSWORD) as (port, mail, ca):
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # trust the test server's certificate, as a company CA is
        alerts = WEBHOOKS + (
            f"  - {{kind: email, smtp_host: 127.0.0.1, smtp_port: {port}, from: p@example.com, to: [soc@example.com],"
            " username_env: SMTP_USER, password_env: SMTP_PASSWORD}\n"
        )
        env = {"TEAMS_URL": http.url("/teams"), "SLACK_URL": http.url("/slack"), "HOOK_URL": http.url("/hook"),
               "SMTP_USER": "pipeline", "SMTP_PASSWORD": SMTP_PASSWORD}  # fmt: skip
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # The tenant's token is refused: the run fails at once; its message names the variable.
        monkeypatch.setenv("CONTOSO_TOKEN", "revoked-" + SECRET_TOKEN)
        settings = loaded(tenants_file(tmp_path, server.url, alerts), **env, ACTIVITY_DATA_DIR=str(tmp_path / "d"))
        _failed_run_alerts(tmp_path, settings, day)
    (card,) = http.bodies("/teams")
    content = card["attachments"][0]["content"]
    assert card["type"] == "message" and content["type"] == "AdaptiveCard"
    text = str(content)
    assert "contoso" in text and day.isoformat() in text and "the run failed" in text
    assert "check CONTOSO_TOKEN" in text and "What to do:" in text
    assert content["actions"][0]["url"].startswith("http://dagster.example.com/runs/")
    (slack,) = http.bodies("/slack")
    assert slack["text"].startswith("[activity_pipeline] contoso") and "<http" not in str(slack), "no UI URL given"
    assert http.bodies("/hook") == [], "the webhook is for fabrikam only"
    (email,) = mail
    assert email["Subject"].startswith(f"[activity_pipeline] contoso {day}") and email["To"] == "soc@example.com"
    everything = str(http.posts) + email.as_string()
    assert SECRET_TOKEN not in everything and SMTP_PASSWORD not in everything


def test_a_failed_blocking_check_alerts_with_its_runbook_line(tmp_path, http, monkeypatch):
    from activity_pipeline.demo_tenant import DemoTenant

    day = DAYS[0]
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=12_000))
    tenant.set_now(dt.datetime.combine(day + dt.timedelta(days=10), dt.time(0), dt.UTC))
    monkeypatch.setenv("HOOK_URL", http.url("/hook"))
    with broken(LosesRecords, tenant) as server:
        monkeypatch.setenv("CONTOSO_TOKEN", "test-token-5f2c9a0e-do-not-log")
        path = tenants_file(tmp_path, server.url, "  - {kind: webhook, url_env: HOOK_URL}\n")
        settings = config.load({
            "ACTIVITY_TENANTS_FILE": str(path), "CONTOSO_TOKEN": "test-token-5f2c9a0e-do-not-log",
            "HOOK_URL": http.url("/hook"), "ACTIVITY_DATA_DIR": str(tmp_path / "d"),
        })  # fmt: skip
        _failed_run_alerts(tmp_path, settings, day)
    (alert,) = http.bodies("/hook")
    assert alert["tenant"] == "contoso" and alert["day"] == day.isoformat()
    assert alert["what"] == "check failed: count_matches_source" and "full_rescan=true" in alert["runbook"]


def test_days_about_to_leave_the_retention_alert_once(tmp_path, http, monkeypatch):
    monkeypatch.setenv("HOOK_URL", http.url("/hook"))
    path = tenants_file(
        tmp_path, "https://contoso.eu2.portal.cloudappsecurity.com", "  - {kind: webhook, url_env: HOOK_URL}\n"
    )
    settings = loaded(path, HOOK_URL=http.url("/hook"), ACTIVITY_DATA_DIR=str(tmp_path))
    defs = build_defs(resources_for(settings), settings)
    (sensor,) = [s for s in defs.sensors if s.name == "activity_alerts_standing"]
    storage = ActivityStorage(data_dir=str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources={"storage": storage}, definitions=defs) as context:
        first = sensor.evaluate_tick(context)
    # The daemon's next tick starts from the cursor the last one left.
    with dg.build_sensor_context(
        instance=instance, resources={"storage": storage}, definitions=defs, cursor=first.cursor
    ) as context:
        second = sensor.evaluate_tick(context)
    bodies = http.bodies("/hook")
    assert sorted(b["tenant"] for b in bodies) == ["contoso", "fabrikam"], "one alert per tenant"
    assert "leave the service's window unstored" in bodies[0]["what"] and "missing" in bodies[0]["details"]
    assert second.skip_message and len(http.bodies("/hook")) == 2, "said once"


def test_a_warning_still_standing_past_the_settle_window_alerts_once(tmp_path, http, monkeypatch):
    today = dt.datetime.now(dt.UTC).date()
    monkeypatch.setenv("HOOK_URL", http.url("/hook"))
    hook = "  - {kind: webhook, url_env: HOOK_URL}\n"
    start = (today - dt.timedelta(days=30)).isoformat()  # far from the retention's end: no day at risk
    path = tenants_file(tmp_path, "https://contoso.eu2.portal.cloudappsecurity.com", hook, start=start)
    settings = loaded(path, HOOK_URL=http.url("/hook"), ACTIVITY_DATA_DIR=str(tmp_path))
    defs = build_defs(resources_for(settings), settings)
    instance = dg.DagsterInstance.ephemeral()
    settled, fresh = today - dt.timedelta(days=5), today - dt.timedelta(days=1)
    for day in (settled, fresh):  # as the checks step reports them
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("activities"), check_name="apps_still_reporting", passed=False,
                severity=dg.AssetCheckSeverity.WARN, description="apps that reported every trailing day: [20893]",
                partition=f"{day}|contoso",
            )
        )  # fmt: skip
    (sensor,) = [s for s in defs.sensors if s.name == "activity_alerts_standing"]
    storage = ActivityStorage(data_dir=str(tmp_path))
    with dg.build_sensor_context(instance=instance, resources={"storage": storage}, definitions=defs) as context:
        first = sensor.evaluate_tick(context)
    (alert,) = http.bodies("/hook")
    assert (alert["tenant"], alert["day"], alert["severity"]) == ("contoso", settled.isoformat(), "WARN")
    assert alert["what"] == "apps_still_reporting still failing past the settle window" and "20893" in alert["details"]
    with dg.build_sensor_context(
        instance=instance, resources={"storage": storage}, definitions=defs, cursor=first.cursor
    ) as context:
        assert sensor.evaluate_tick(context).skip_message and len(http.bodies("/hook")) == 1


def test_a_receiver_that_fails_is_named_without_its_url_and_the_others_still_get_the_alert(tmp_path, http, monkeypatch):
    failing = HttpReceiver(statuses=[500, 500, 500])
    monkeypatch.setenv("BAD_URL", failing.url("/secret-path-4411"))
    monkeypatch.setenv("GOOD_URL", http.url("/good"))
    alerts = "  - {kind: slack, url_env: BAD_URL}\n  - {kind: webhook, url_env: GOOD_URL}\n"
    path = tenants_file(tmp_path, "https://contoso.eu2.portal.cloudappsecurity.com", alerts)
    destinations = loaded(path, BAD_URL=failing.url("/x"), GOOD_URL=http.url("/good")).alerts
    warnings: list[str] = []

    class Log:
        def warning(self, text: str) -> None:
            warnings.append(text)

    alert = Alert("contoso", "2026-11-24", "the run failed", "details", "do this")
    assert deliver(alert, destinations, Log()) == 1
    assert len(failing.posts) == 3, "retried twice" and http.bodies("/good")
    (warning,) = warnings
    assert "slack (BAD_URL): the alert was not delivered: the receiver answered 500" in warning
    assert "secret-path-4411" not in warning
    failing.close()
    with pytest.raises(AlertDeliveryError, match="BAD_URL"):
        destinations[0].send(alert)


def test_no_alert_sensor_without_destinations():
    assert build_alert_sensors([], dg.AssetKey("activities"), None, []) == []  # type: ignore[arg-type]
    assert standing_alerts is not None
