from __future__ import annotations

import pytest

from coffer.domain.slugs import slugify
from coffer.errors import InvalidRequest


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("app-encryption", "app-encryption"),
        ("App Encryption", "app-encryption"),
        ("  --Payments__Key v2!! ", "payments-key-v2"),
        ("Ümlaut Schlüssel", "mlaut-schl-ssel"),
        ("a/b.c", "a-b-c"),
        ("007", "007"),
    ],
)
def test_slugify_lowercases_and_collapses_runs_outside_a_z0_9(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_slugify_cuts_to_63_characters() -> None:
    assert slugify("x" * 100) == "x" * 63


def test_slugify_never_ends_on_a_dash_after_the_cut() -> None:
    name = "a" * 62 + " b"
    assert slugify(name) == "a" * 62


@pytest.mark.parametrize("name", ["", "---", "!!!", "   ", "ÄÖÜ", "\u212a", "\u0130"])
def test_slugify_rejects_names_without_a_letter_or_digit(name: str) -> None:
    with pytest.raises(InvalidRequest):
        slugify(name)


def test_a_name_makes_a_slug_exactly_when_the_documents_pattern_says_so() -> None:
    """The OpenAPI document says a name needs an ASCII letter or digit: the Kelvin sign, which
    ``str.lower`` turns into ``k``, is not one."""
    import re

    from coffer.api.openapi import _SLUGGED_NAME

    pattern = re.compile(str(_SLUGGED_NAME["pattern"]))
    for name in ["K", "İstanbul", "a", "Ä", "k9", "--", "\u212a", "\u0130"]:
        try:
            slugify(name)
            made = True
        except InvalidRequest:
            made = False
        assert made == bool(pattern.search(name)), name
