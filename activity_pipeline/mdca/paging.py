"""Scan mode's paging: one window, page after page, by the server's own cursor.

The server answers each scan request with up to `limit` records, `hasNext`, and `nextQueryFilters`: the
filters to send for the next page. The cursor is the server's business: it goes back byte for byte and the
client never builds one of its own (the real service drops a page's trailing records that share its last
timestamp and bounds the next filters at it; nothing here relies on how). What the client does own is
noticing a cursor that does not move, which would otherwise loop forever.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from activity_pipeline.mdca.client import MdcaClient
from activity_pipeline.mdca.errors import ScanStalledError
from activity_pipeline.pagebody import PageBody

# The most scan mode returns in one page.
PAGE_LIMIT = 5000


# What to do about a cursor that does not move (said in each such error).
CURSOR_FIX = (
    "Nothing of the day was stored or changed. Run the day again later; if it happens again, the service (or a "
    "proxy that rewrites its answers) is broken: report it with this message"
)


class ScanResponse(msgspec.Struct):
    """One scan-mode answer: the records (undecoded views into the page body) and the way on."""

    data: list[msgspec.Raw] = []
    hasNext: bool = False
    # Raw, so that it goes back byte for byte; empty when absent (msgspec has no Raw | None).
    nextQueryFilters: msgspec.Raw = msgspec.Raw(b"")


_decode = msgspec.json.Decoder(ScanResponse).decode


def decode_page(content: bytes | np.ndarray) -> tuple[ScanResponse, PageBody]:
    """The page, and the body its records are views into."""
    return _decode(content), PageBody(content)


class ServerCursor:
    """Fetch the pages of one filtered window in order, following `nextQueryFilters`.

    Args:
        client: the tenant's client; every page is one `client.post`, retried and rate limited there.
        filters: the first request's filters, e.g. `window_filters(start_ms, end_ms)`.
        sort_field: `date` (the activity's `timestamp`) or `created` (when the service saved it).
        label: how errors name this window, e.g. "activities 2026-11-24, slice 2".

    >>> cursor = ServerCursor(client, window_filters(start_ms, end_ms), label="activities")  # doctest: +SKIP
    >>> page, body = cursor.fetch()
    >>> while cursor.has_next:
    ...     cursor.advance()
    ...     page, body = cursor.fetch()
    """

    def __init__(
        self, client: MdcaClient, filters: dict[str, Any], *, sort_field: str = "date", label: str = "scan"
    ) -> None:
        self._client = client
        self._tail = msgspec.json.encode(
            {"isScan": True, "limit": PAGE_LIMIT, "sortField": sort_field, "sortDirection": "asc"}
        )[1:]
        self._filters = msgspec.json.encode(filters)
        self._next = b""
        self.has_next = True
        self.pages = 0
        self.label = label

    def fetch(self) -> tuple[ScanResponse, PageBody]:
        """The page the cursor points at now."""
        page, body = self._client.post(b'{"filters":' + self._filters + b"," + self._tail, decode_page)
        self.pages += 1
        self.has_next = page.hasNext
        self._next = bytes(page.nextQueryFilters)
        return page, body

    def advance(self) -> None:
        """Move to the next page, or raise ScanStalledError when the server's cursor would not move."""
        if self._next in (b"", b"null"):
            raise ScanStalledError(
                f"{self.label}: the server said hasNext but sent no nextQueryFilters (page {self.pages}); "
                f"stopping rather than guessing a cursor. {CURSOR_FIX}"
            )
        if self._next == self._filters:
            raise ScanStalledError(
                f"{self.label}: the server sent back the same nextQueryFilters it was given (page {self.pages}); "
                f"the scan would repeat this page forever. {CURSOR_FIX}"
            )
        self._filters, self._next = self._next, b""
