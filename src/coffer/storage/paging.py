"""``PageRequest`` as SQL: (created_at, identity) after the cursor, one row more than the page
to know whether another follows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, and_, or_

from coffer.domain.paging import After, PageRequest
from coffer.storage.rows import utc


def paged(query: Any, created_at: Any, identity: Any, page: PageRequest) -> Any:
    """``query`` in (created_at, identity) order, from the page's cursor, one row over."""
    query = query.order_by(created_at, identity)
    if page.after is not None:
        at, last = page.after
        query = query.where(or_(created_at > at, and_(created_at == at, identity > last)))
    if page.limit is not None:
        query = query.limit(page.limit + 1)
    return query


def cut(rows: Sequence[Row[Any]], page: PageRequest) -> tuple[Sequence[Row[Any]], After | None]:
    """The page's rows, and the cursor after its last one if more follow."""
    if page.limit is None or len(rows) <= page.limit:
        return rows, None
    rows = rows[: page.limit]
    return rows, (utc(rows[-1].created_at), str(rows[-1].identity))
