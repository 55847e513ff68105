"""Paging of lists: at most ``limit`` items after a cursor, in (createdAt, identity) order.

A cursor is the sort key of the last row of a page — read, not returned: rows the storage
barrier refuses (or a filter applied after reading drops) still move it on, so a page may hold
fewer than ``limit`` items and still have a next one. The API carries it to clients opaque
(``coffer.api.http``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

T = TypeVar("T")

#: The largest page a client may ask for.
MAX_PAGE = 1000

#: Where a page starts: after this (createdAt, identity).
After = tuple[datetime, str]


@dataclass(frozen=True, slots=True)
class PageRequest:
    #: ``None``: every item (the key list without ``limit``, as the contract has it).
    limit: int | None = None
    after: After | None = None


class Paged(list[T]):
    """A page of items, and where the next one starts (``None``: this was the last)."""

    def __init__(self, items: Iterable[T] = (), next_after: After | None = None) -> None:
        super().__init__(items)
        self.next_after = next_after


EVERYTHING = PageRequest()
