"""Bad input gets a clear 4xx and changes nothing: bodies with invalid UTF-8 (in a value or in a
field name), sent to every endpoint that reads a body — generated from the endpoint table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from coffer.api.routes import ENDPOINTS, Endpoint
from tests.api.test_one_write_path import stored
from tests.conftest import Kms, initialised, make_settings, open_kms

BODIED = [e for e in ENDPOINTS if e.request is not None]
PATH_VALUES = {"region": "nl-01", "key": "k", "organisation": "default", "token": "tok-x",
               "binding": "rb-x"}  # fmt: skip


def first_field(endpoint: Endpoint) -> str:
    fields: tuple[str, ...] = endpoint.request.__struct_encode_fields__  # type: ignore[union-attr]
    return fields[0]


BODIES = {
    "in a value": lambda e: b'{"' + first_field(e).encode() + b'":"\xc3("}',
    "in a field name": lambda e: b'{"\xc3(":"x"}',
    "a lone continuation byte": lambda e: b'{"' + first_field(e).encode() + b'":"a\x80b"}',
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kms]:
    settings = make_settings(tmp_path_factory.mktemp("bad") / "data")
    for kms in open_kms(settings, initialised(settings)):
        kms.create_key("k")
        yield kms


@pytest.mark.parametrize("endpoint", BODIED, ids=lambda e: f"{e.method} {e.path}")
@pytest.mark.parametrize("body", list(BODIES))
def test_invalid_utf8_is_a_400_and_changes_nothing(
    world: Kms, endpoint: Endpoint, body: str
) -> None:
    path = endpoint.path.format(**PATH_VALUES)
    before = stored(world)
    answer: Any = world.client.request(
        endpoint.method, path, content=BODIES[body](endpoint),
        headers={**world.headers, "Content-Type": "application/json"},
    )  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_request"
    if body == "in a field name":  # a value may fail its own check first (base64, a number)
        assert answer.json()["message"] == "request body must be JSON in UTF-8"
    assert stored(world) == before


@pytest.mark.parametrize("endpoint", BODIED, ids=lambda e: f"{e.method} {e.path}")
def test_a_name_twice_in_one_object_is_a_400_and_changes_nothing(
    world: Kms, endpoint: Endpoint
) -> None:
    field = first_field(endpoint)
    path = endpoint.path.format(**PATH_VALUES)
    before = stored(world)
    answer: Any = world.client.request(
        endpoint.method, path, content=f'{{"{field}":null,"{field}" : null}}'.encode(),
        headers={**world.headers, "Content-Type": "application/json"},
    )  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"code": "invalid_request", "requestId": answer.json()["requestId"],
                             "message": f"request body names '{field}' twice in one object"}  # fmt: skip
    assert stored(world) == before


def test_a_second_export_allowed_does_not_make_an_exportable_key(world: Kms) -> None:
    """The attack: proxies and logs see the first value, the last parser the second."""
    before = stored(world)
    for body in (
        b'{"name":"x","keyType":"hmac","exportAllowed":false,"exportAllowed":true}',
        b'{"name":"x","keyType":"hmac","labels":{"team":"a","team":"b"}}',
        # The second name spelt with an escape: the same name once decoded.
        b'{"name":"x","keyType":"hmac","exportAllowed":false,"exportAll\\u006fwed":true}',
        b'{"name":"x","keyType":"hmac","exportAllowed":false,"export\\u0041llowed":true}',
    ):
        answer = world.client.post("/v1/kms/nl-01/keys", content=body, headers=world.headers)
        assert answer.status_code == 400, answer.text
        assert "twice in one object" in answer.json()["message"]
    assert world.client.get("/v1/kms/nl-01/keys/x", headers=world.headers).status_code == 404
    assert stored(world) == before


@pytest.mark.parametrize(
    "body",
    [
        {"name": "y", "keyType": "a" * 500_000},
        {"name": "y", "keyType": "aes256-gcm96", "labels": {"b" * 500_000: "v"}},
        {"name": "y", "keyType": "aes256-gcm96", "rotationPeriodInDays": "c" * 500_000},
    ],
    ids=["an unknown key type", "a label name", "a wrong type"],
)
def test_an_error_repeats_at_most_a_bounded_part_of_the_input(world: Kms, body: Any) -> None:
    answer = world.client.post("/v1/kms/nl-01/keys", json=body, headers=world.headers)
    assert answer.status_code == 400, answer.text[:300]
    assert len(answer.content) < 1024
    assert "a" * 65 not in answer.text
    assert "b" * 65 not in answer.text
