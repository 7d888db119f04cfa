"""The bytes of one page as received, and who may do what with them. Shared by the API client (`mdca`), which
fills it, and storage, which turns it into columns; neither imports the other.

A scan page is about 17 MB of JSON. The client reads it from the socket straight into one writable byte
array (`MdcaClient`'s body reader); msgspec decodes the page from that array, and each record of the page's
`data` is a `msgspec.Raw` view into it, so no record is copied on the way in. A consumer that turns the page
into columns may then move the record bytes together *inside the same array* and point its own column at
them (storage does this for the `raw` column), so the page is never held twice.

That is the contract, in one type:
- `PageBody.data` holds the page's bytes; `writable` says whether it may be changed in place. Pages read
  with a known length are writable numpy arrays; anything else (a compressed or chunked body, bytes a test
  built) is not, and a consumer must copy instead.
- Once a consumer has moved bytes inside a writable body, the page's `msgspec.Raw` views point at moved
  bytes: it must not read them again. The scanner hands the body over only after it is done with the views
  (see `Scanner`'s `convert`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class PageBody:
    """One page's bytes, and whether a consumer may rearrange them in place.

    >>> body = PageBody(np.frombuffer(b'{"data":[]}', dtype=np.uint8).copy())
    >>> body.writable, len(body)
    (True, 11)
    >>> PageBody(b"{}").writable
    False
    """

    data: bytes | bytearray | np.ndarray

    @property
    def writable(self) -> bool:
        data = self.data
        return isinstance(data, bytearray) or (isinstance(data, np.ndarray) and bool(data.flags.writeable))

    def __len__(self) -> int:
        return len(self.data)
