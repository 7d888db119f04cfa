"""The seed document's scan loop (shared/seeds/investigate-activities-api.txt), kept as written.

Only the URL, the token and the request body are parameters. It is the baseline the benchmarks measure
against and the reference client the demo tenant's tests use: if the naive loop gets every record exactly
once, the server keeps the scan-mode contract. It holds every record in memory, has no retries and never
checks what it got; that is the point.
"""

from __future__ import annotations

import json
from typing import Any

import requests


def seed_loop(activities_url: str, your_token: str, request_data: dict[str, Any], *, quiet: bool = True) -> list:
    headers = {
        "Authorization": f"Token {your_token}",
    }
    records = []
    has_next = True
    while has_next:
        content = json.loads(requests.post(activities_url, json=request_data, headers=headers).content)
        response_data = content.get("data", [])
        records += response_data
        if not quiet:
            print(f"Got {len(response_data)} more records")
        has_next = content.get("hasNext", False)
        request_data["filters"] = content.get("nextQueryFilters")
    if not quiet:
        print(f"Got {len(records)} records in total")
    return records
