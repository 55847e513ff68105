"""Paging: every list takes ``limit`` and an opaque ``cursor``; the next page's cursor comes in
``X-Next-Cursor``. The key list without ``limit`` is still one array of every key (the Thalassa
contract), administration lists give 100 a page by default, and the SDK follows the cursors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from coffer.client import AsyncClient
from coffer.domain.keys import KeySpec
from coffer.service.context import RequestMeta
from coffer.service.keys import CreateInput
from tests.api.test_access import error
from tests.conftest import Kms, initialised, make_settings, open_kms

KEYS = "/v1/kms/nl-01/keys"
MANY = 10_000


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kms]:
    """An organisation with 10,000 keys (made through the key service, 500 at a time)."""
    settings = make_settings(tmp_path_factory.mktemp("paging") / "data")
    for kms in open_kms(settings, initialised(settings)):
        for first in range(0, MANY, 500):
            kms.run(make_keys, kms, first, 500)
        yield kms


async def make_keys(kms: Kms, first: int, count: int) -> None:
    meta = RequestMeta("paging", kms.boot.token, kms.org)
    await asyncio.gather(*(
        kms.services.keys.create_key(meta, "nl-01", lambda n=n: CreateInput(
            KeySpec.build(name=f"key-{n:05}", key_type="aes256-gcm96")))
        for n in range(first, first + count)
    ))  # fmt: skip


def pages(kms: Kms, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list, following ``X-Next-Cursor``."""
    found = []
    query = dict(params)
    while True:
        answer = kms.client.get(path, params=query, headers=kms.headers)
        assert answer.status_code == 200, answer.text
        found.append(answer.json())
        cursor = answer.headers.get("x-next-cursor")
        if cursor is None:
            return found
        query["cursor"] = cursor


def test_paging_through_ten_thousand_keys(crowded: Kms) -> None:
    started = time.perf_counter()
    paged = pages(crowded, KEYS, limit=1000)
    took = time.perf_counter() - started
    assert [len(p) for p in paged] == [1000] * 10
    keys = [k for page in paged for k in page]
    assert len({k["identity"] for k in keys}) == MANY
    order = [(k["createdAt"], k["identity"]) for k in keys]
    assert order == sorted(order), "oldest first, across pages"
    print(f"\n10,000 keys in 10 pages of 1,000: {took:.2f} s")
    # Without limit, one array of every key, as the contract's clients expect.
    whole = crowded.client.get(KEYS, headers=crowded.headers)
    assert len(whole.json()) == MANY
    assert "x-next-cursor" not in whole.headers
    # Small pages and filters page alike.
    assert sum(len(p) for p in pages(crowded, KEYS, limit=999)) == MANY
    active = pages(crowded, KEYS, limit=400, status="active", keyType="aes256-gcm96")
    assert sum(len(p) for p in active) == MANY


def test_the_sdk_follows_the_cursors(crowded: Kms) -> None:
    async def listed() -> list[Any]:
        transport = httpx.ASGITransport(app=crowded.client.app)
        async with AsyncClient("http://coffer.test", crowded.boot.token,
                               organisation=crowded.org, transport=transport) as client:  # fmt: skip
            return await client.keys.list()

    assert len({k.identity for k in crowded.run(listed)}) == MANY


def test_administration_lists_give_a_hundred_a_page_unless_asked(kms: Kms) -> None:
    for n in range(150):
        assert kms.post("/v1/iam/service-accounts", {"name": f"sa-{n}"}).status_code == 201
    first = kms.get("/v1/iam/service-accounts")
    assert len(first.json()) == 100
    second = kms.get("/v1/iam/service-accounts",
                     params={"cursor": first.headers["x-next-cursor"]})  # fmt: skip
    assert len(second.json()) == 50
    assert "x-next-cursor" not in second.headers
    names = [a["name"] for a in first.json() + second.json()]
    assert sorted(names) == sorted(f"sa-{n}" for n in range(150))
    assert len(kms.get("/v1/iam/service-accounts", params={"limit": 1000}).json()) == 150
    for path in ("/v1/projects", "/v1/iam/tokens", "/v1/iam/role-bindings", "/v1/organisations"):
        answer = kms.get(path, params={"limit": 1})
        assert answer.status_code == 200, (path, answer.text)
        assert len(answer.json()) <= 1


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"cursor": "not-a-cursor"},
     {"cursor": "W10"}, {"cursor": "WyIyMDI2IiwgMV0"}],
)  # fmt: skip
def test_a_bad_limit_or_cursor_is_a_400(kms: Kms, params: dict[str, str]) -> None:
    for path in (KEYS, "/v1/iam/service-accounts"):
        error(kms.get(path, params=params), 400, "invalid_request")


def test_any_well_formed_cursor_is_a_place_in_the_list(kms: Kms) -> None:
    """A cursor names a place (a time and an identity): one from before every item starts at
    the beginning, one after them all gives an empty page."""
    for n in range(3):
        assert kms.post("/v1/iam/service-accounts", {"name": f"c-{n}"}).status_code == 201
    assert len(kms.get("/v1/iam/service-accounts", params={"cursor": "0.a"}).json()) == 3
    late = kms.get("/v1/iam/service-accounts", params={"cursor": "9999999999999999.z"})
    assert late.json() == []
    assert "x-next-cursor" not in late.headers


def test_a_bad_cursor_from_an_unauthenticated_caller_is_still_a_401(kms: Kms) -> None:
    """Validation comes after authentication: it tells an outsider nothing."""
    answer = kms.client.get(KEYS, params={"cursor": "junk"},
                            headers={"Authorization": "Bearer coffer_nope"})  # fmt: skip
    error(answer, 401, "unauthenticated")
