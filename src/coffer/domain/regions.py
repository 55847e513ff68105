"""Regions come from server configuration; a key lives in exactly one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Region:
    identity: str
    slug: str
    name: str
    kms_available: bool
