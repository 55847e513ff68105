from __future__ import annotations

import re

import pytest

from coffer import errors
from coffer.api.errors import STATUS, status_of


def all_error_classes() -> list[type[errors.CofferError]]:
    found: list[type[errors.CofferError]] = []
    todo = [errors.CofferError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_has_a_snake_case_code_and_a_message() -> None:
    for cls in all_error_classes():
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", cls.code), cls
        assert cls.default_message


def test_codes_are_unique_except_where_a_subclass_hides_details() -> None:
    import coffer.crypto.hsm
    import coffer.crypto.root
    import coffer.domain.seal  # noqa: F401  (defines StaleRootGeneration, a kind of Unavailable)

    by_code: dict[str, set[str]] = {}
    for cls in all_error_classes():
        by_code.setdefault(cls.code, set()).add(cls.__name__)
    shared = {code: names for code, names in by_code.items() if len(names) > 1}
    # Tampered material answers as a plain internal error, and a root key problem as plain
    # unavailability: neither tells a caller more than that.
    assert shared == {
        "internal": {"CofferError", "Internal", "KeyIntegrityError"},
        "unavailable": {"Unavailable", "RootKeyError", "HsmUnavailable", "StaleRootGeneration"},
    }


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.Unauthenticated(), 401),
        (errors.OrganisationRequired(), 400),
        (errors.Forbidden(), 403),
        (errors.KmsNotEnabled(), 403),
        (errors.RegionNotFound(), 404),
        (errors.KeyNotFound(), 404),
        (errors.RegionUnavailable(), 503),
        (errors.InvalidRequest(), 400),
        (errors.InvalidCiphertext(), 400),
        (errors.UnsupportedKeyType(), 400),
        (errors.UnsupportedOperation(), 400),
        (errors.KeyDisabled(), 400),
        (errors.KeyPendingDeletion(), 400),
        (errors.InvalidPlaintext(), 400),
        (errors.RequestTooLarge(), 413),
        (errors.Conflict(), 409),
        (errors.Unavailable(), 503),
        (errors.Internal(), 500),
        (errors.KeyIntegrityError(), 500),
    ],
)
def test_error_table_maps_each_class_to_the_spec_status(
    error: errors.CofferError, status: int
) -> None:
    assert status_of(error) == status


def test_every_error_class_gets_a_status_from_the_table() -> None:
    for cls in all_error_classes():
        assert any(base in STATUS for base in cls.__mro__), cls


def test_clients_map_codes_back_to_the_most_general_class() -> None:
    assert errors.error_class_for_code("key_not_found") is errors.KeyNotFound
    assert errors.error_class_for_code("invalid_ciphertext") is errors.InvalidCiphertext
    assert errors.error_class_for_code("internal") is errors.Internal
    assert errors.error_class_for_code("something_new") is errors.CofferError
