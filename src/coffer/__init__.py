"""Coffer: a self-hosted Key Management Service."""

from __future__ import annotations


def version() -> str:
    """The installed Coffer's version ("unknown" in a source tree never installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("coffer")
    except PackageNotFoundError:
        return "unknown"
