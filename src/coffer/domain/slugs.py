"""Slugs: the URL-safe name of a key, project or organisation (spec §2)."""

from __future__ import annotations

import re

from coffer.errors import InvalidRequest

MAX_SLUG_LENGTH = 63
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
#: Only A-Z are lowered: ``str.lower`` also makes ASCII of some other letters (the Kelvin sign
#: becomes ``k``), and a name's slug should not hang on that.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def slugify(name: str) -> str:
    """Lowercase (A-Z), replace each run outside ``[a-z0-9]`` by ``-``, trim ``-``, cut to 63.

    The spec trims before cutting; a cut can then end on ``-``, so it is trimmed once more (the
    result is always a valid slug: no leading or trailing ``-``).
    """
    slug = _NOT_SLUG.sub("-", name.translate(_ASCII_LOWER)).strip("-")
    slug = slug[:MAX_SLUG_LENGTH].rstrip("-")
    if not slug:
        raise InvalidRequest("name must contain at least one letter or digit")
    return slug
