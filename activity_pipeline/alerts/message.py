"""What an alert says, and how each destination wants it: a Teams Adaptive Card, a Slack message, a JSON object, an
e-mail. No Dagster here; `defs/alerting.py` builds an `Alert` from a run or a check and sends it.

>>> alert = Alert("contoso", "2026-11-24", "count_matches_source failed", "1,204 activities missing", "run it again")
>>> alert.subject
'[activity_pipeline] contoso 2026-11-24: count_matches_source failed'
"""

from __future__ import annotations

import dataclasses
from email.message import EmailMessage
from typing import Any

# What to do, per check: the runbook's line (docs/checks.md) for each check that can fail.
RUNBOOK = {
    "count_matches_source": "records created before the watermark are missing, or more are stored than the source "
    "reports: run the day again with the tag activity_pipeline/full_rescan=true; if it repeats, report it with the "
    "day's _manifest.json",
    "ids_unique": "a duplicate reached the stored day: run the day again; if it repeats, report it with the manifest",
    "timestamps_in_partition": "records outside the day were kept: run the day again; report it if it repeats",
    "no_quarantined_records": "the service sent records without _id or a numeric timestamp: read the day's "
    "_quarantine.jsonl (the records as received); nothing was dropped",
    "schema_matches": "a file from another writer sits in the day: run the day again, it is replaced whole",
    "no_unexpected_silent_hours": "an hour that is usually busy is empty: check the app connectors in the portal, "
    "then run the day again",
    "apps_still_reporting": "an app that reported every day stopped: check that app's connector in the portal "
    "(missing_app_ids names it)",
    "stored_files_intact": "a stored file is no longer what was written: each damaged day's line names its repair "
    "(a full re-scan while the service holds the day, else the keep_days.copied_to copy); then make verify DAY=<day> "
    "TENANT=<tenant>",
    "no_days_leaving_retention_unstored": "days near the end of the service's retention are not stored whole: see "
    "why the service_window_rescue sensor's runs fail, then make backfill FROM=... TO=... with the days listed",
}
RUN_RUNBOOK = (
    "the message says what to fix (docs/failure-modes.md lists every case); once fixed, run the day again: "
    "make run DAY=<day> TENANT=<tenant>, or re-execute the run in the UI"
)
RETENTION_RUNBOOK = (
    "these days leave the service's 180 days soon and are not stored whole: check why the service_window_rescue "
    "sensor's runs fail (the tenant's runs in the UI), fix it, and run the days (make backfill FROM=... TO=... "
    "TENANT=...)"
)


@dataclasses.dataclass(frozen=True)
class Alert:
    """One thing that went wrong, for one tenant and day."""

    tenant: str
    day: str | None
    what: str
    details: str
    runbook: str
    run_url: str | None = None
    severity: str = "ERROR"
    # What makes it this alert and no other: the same key is sent once.
    key: str = ""

    @property
    def subject(self) -> str:
        day = f" {self.day}" if self.day else ""
        return f"[activity_pipeline] {self.tenant}{day}: {self.what}"

    def text(self) -> str:
        lines = [self.subject, "", self.details, "", f"What to do: {self.runbook}"]
        if self.run_url:
            lines += ["", f"Run: {self.run_url}"]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """The generic webhook's body."""
        return {
            "source": "activity_pipeline",
            "tenant": self.tenant,
            "day": self.day,
            "severity": self.severity,
            "what": self.what,
            "details": self.details,
            "runbook": self.runbook,
            "run_url": self.run_url,
        }

    def teams_card(self) -> dict[str, Any]:
        """A Teams Workflows webhook's body: a message with one Adaptive Card."""
        facts = [{"title": "Tenant", "value": self.tenant}, {"title": "Severity", "value": self.severity}]
        if self.day:
            facts.insert(1, {"title": "Day", "value": self.day})
        body: list[dict[str, Any]] = [
            {"type": "TextBlock", "text": self.subject, "weight": "Bolder", "size": "Medium", "wrap": True},
            {"type": "FactSet", "facts": facts},
            {"type": "TextBlock", "text": self.details, "wrap": True},
            {"type": "TextBlock", "text": f"What to do: {self.runbook}", "wrap": True, "isSubtle": True},
        ]
        card: dict[str, Any] = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
        }
        if self.run_url:
            card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the run", "url": self.run_url}]
        return {
            "type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
        }

    def slack_message(self) -> dict[str, Any]:
        """A Slack incoming webhook's body: the text, and the same as blocks."""
        link = f"\n<{self.run_url}|Open the run>" if self.run_url else ""
        return {
            "text": self.subject,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": self.subject[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": self.details[:2900]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*What to do:* {self.runbook}{link}"}},
            ],
        }

    def email(self, sender: str, recipients: list[str]) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = self.subject
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message.set_content(self.text())
        return message
