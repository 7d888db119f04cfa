"""Alerts: what went wrong (`message.Alert`) and where it goes (`destinations.Destination`): Microsoft Teams,
Slack, a generic JSON webhook, e-mail. No Dagster here; `defs/alerting.py` decides when."""

from activity_pipeline.alerts.destinations import AlertDeliveryError, Destination, parse_alerts
from activity_pipeline.alerts.message import Alert

__all__ = ["Alert", "AlertDeliveryError", "Destination", "parse_alerts"]
