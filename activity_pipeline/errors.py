"""The one error every layer may raise about the configuration: it has no dependencies, so the API client
(`mdca`), the storage and the configuration's reader (`config`) all raise the same type, and the commands catch
it once."""

from __future__ import annotations


class ConfigError(ValueError):
    """The settings are missing, malformed or contradictory. The message names what to fix (a variable, a line of
    the tenants file) and never a secret's value."""
