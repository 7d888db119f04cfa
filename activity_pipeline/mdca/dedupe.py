"""Which record ids a scan has already seen, in a fraction of the memory a set of strings would take."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np


class DigestSet:
    """Which ids a window has seen, at 16 bytes an id (a Python set of them would take about 90).

    Ids are kept as 128-bit blake2b digests in sorted numpy runs that merge as they grow, like a
    log-structured merge tree: a 1,000,000-record day costs 16 MB, and a page's lookup is a few binary
    searches. Thread-safe.

    >>> seen = DigestSet()
    >>> seen.add_new(["a", "b", "a"]).tolist(), seen.add_new(["b", "c"]).tolist()
    ([True, True, False], [False, True])
    """

    # Runs stop merging at this size: a merge briefly holds both runs, their concatenation and its sort order,
    # and merging a day's last million ids would cost a 50 MB spike. A page's lookup then takes a few more
    # binary searches (one per 262,144 ids).
    MAX_RUN = 1 << 18

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(hi) for hi, _ in self._runs)

    def contains(self, ids: Sequence[str]) -> np.ndarray:
        """True for each of `ids` already recorded; records nothing.

        >>> seen = DigestSet(); _ = seen.add_new(["a"])
        >>> seen.contains(["a", "b"]).tolist()
        [True, False]
        """
        hi, lo = _digests(ids)
        found = np.zeros(len(ids), dtype=bool)
        with self._lock:
            for run_hi, run_lo in self._runs:
                found |= _member(run_hi, run_lo, hi, lo)
        return found

    def add_new(self, ids: Sequence[str]) -> np.ndarray:
        """Record `ids`; True for each one not seen before (the first of repeats within `ids` counts as new)."""
        n = len(ids)
        hi, lo = _digests(ids)
        order = np.lexsort((lo, hi))
        hs, ls = hi[order], lo[order]
        new = np.ones(n, dtype=bool)
        new[1:] = (hs[1:] != hs[:-1]) | (ls[1:] != ls[:-1])
        with self._lock:
            for run_hi, run_lo in self._runs:
                new &= ~_member(run_hi, run_lo, hs, ls)
            if new.any():
                self._push(hs[new], ls[new])
        mask = np.empty(n, dtype=bool)
        mask[order] = new
        return mask

    def _push(self, hi: np.ndarray, lo: np.ndarray) -> None:
        self._runs.append((hi, lo))
        while (
            len(self._runs) > 1
            and len(self._runs[-1][0]) * 2 >= len(self._runs[-2][0])
            and len(self._runs[-1][0]) + len(self._runs[-2][0]) <= self.MAX_RUN
        ):
            (h2, l2), (h1, l1) = self._runs.pop(), self._runs.pop()
            h, lo_ = np.concatenate([h1, h2]), np.concatenate([l1, l2])
            order = np.lexsort((lo_, h))
            self._runs.append((h[order], lo_[order]))


def _digests(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The high and low halves of each id's 128-bit blake2b digest."""
    digests = b"".join(hashlib.blake2b(i.encode(), digest_size=16).digest() for i in ids)
    pairs = np.frombuffer(digests, dtype=np.uint64).reshape(len(ids), 2)
    return pairs[:, 0], pairs[:, 1]


def _member(run_hi: np.ndarray, run_lo: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Which (hi, lo) pairs are in a run sorted by (hi, lo)."""
    left = np.searchsorted(run_hi, hi, "left")
    right = np.searchsorted(run_hi, hi, "right")
    found = np.zeros(len(hi), dtype=bool)
    single = right - left == 1
    found[single] = run_lo[left[single]] == lo[single]
    # Equal high halves in one run: astronomically rare, checked one by one.
    for k in np.flatnonzero(right - left > 1):
        found[k] = bool((run_lo[left[k] : right[k]] == lo[k]).any())
    return found


class RecentIds:
    """The ids of one slice's recent pages, for a scan that pages by timestamp: bounded by the pages that can
    still repeat, not by the day.

    A duplicate in a page has the timestamp of the record it repeats, and every record of the page has a
    timestamp at or after the page's earliest. So a page's duplicates are found among the ids seen with a
    timestamp at or after that earliest one: at a page boundary (the next page starts at the last timestamp),
    across a tie of any size on one timestamp (its pages all share that timestamp), and in an overlap or a
    replay of the latest pages. Pages whose latest timestamp falls before the earliest of the last
    `KEEP_PAGES` pages are let go: a 10,000,000-record day holds a few pages of ids, not 160 MB of them.

    What it cannot see (a server going back further than that) the stored day's `ids_unique` check finds.
    Not thread-safe: one slice is one worker's.

    >>> seen = RecentIds()
    >>> seen.add_new(["a", "b"], [1, 2]).tolist(), seen.add_new(["b", "c"], [2, 3]).tolist()
    ([True, True], [False, True])
    """

    # The earliest timestamps of this many latest pages set the horizon: one page of slack past the page at
    # hand, so that a replay of the page before it is still caught.
    KEEP_PAGES = 3

    def __init__(self) -> None:
        # (latest timestamp, digests sorted by (hi, lo)) per page seen.
        self._pages: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._earliest: list[int] = []

    def __len__(self) -> int:
        return sum(len(hi) for _, hi, _ in self._pages)

    def add_new(self, ids: Sequence[str], timestamps: Sequence[int]) -> np.ndarray:
        """Record a page's ids; True for each one not seen before (the first of repeats within `ids` counts)."""
        n = len(ids)
        if not n:
            return np.ones(0, dtype=bool)
        self._earliest = [*self._earliest, int(min(timestamps))][-self.KEEP_PAGES :]
        horizon = min(self._earliest)
        self._pages = [p for p in self._pages if p[0] >= horizon]
        hi, lo = _digests(ids)
        order = np.lexsort((lo, hi))
        hs, ls = hi[order], lo[order]
        new = np.ones(n, dtype=bool)
        new[1:] = (hs[1:] != hs[:-1]) | (ls[1:] != ls[:-1])
        for _, run_hi, run_lo in self._pages:
            new &= ~_member(run_hi, run_lo, hs, ls)
        if new.any():
            self._pages.append((int(max(timestamps)), hs[new], ls[new]))
        mask = np.empty(n, dtype=bool)
        mask[order] = new
        return mask
