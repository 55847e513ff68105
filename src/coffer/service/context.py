"""What a request brings (``RequestMeta``) and who it turns out to be (``Caller``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from coffer.domain.permissions import Grants
from coffer.domain.tenants import Organisation, Principal, Project

T = TypeVar("T")

#: A request's input, parsed and validated only when called. Operations call it after the
#: caller, the region and the key have been checked (spec §1.1: validation is step 8), so that a
#: caller without access learns nothing from a validation error, and every failure is audited.
Input = Callable[[], T]


@dataclass(frozen=True, slots=True)
class RequestMeta:
    """The caller's claims, as read from the request; nothing is verified yet."""

    request_id: str
    token: str | None = field(default=None, repr=False)
    organisation_ref: str | None = None
    project_ref: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated principal acting in one organisation (and optionally one project)."""

    principal: Principal
    organisation: Organisation
    project: Project | None
    grants: Grants

    @property
    def project_identity(self) -> str | None:
        return self.project.identity if self.project is not None else None
