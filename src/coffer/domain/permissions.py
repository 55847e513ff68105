"""Actions, built-in policies and their pure evaluation (spec §7).

A role binding grants a policy on an organisation, on one project of it, or on one key. An
organisation binding covers every key of the organisation, project keys included; a project binding
covers that project's keys; a key binding covers that key. Effective permission is the union.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Action(StrEnum):
    LIST = "list"
    READ = "read"
    CREATE = "create"
    ENCRYPT = "encrypt"
    DECRYPT = "decrypt"
    SIGN = "sign"
    VERIFY = "verify"
    HMAC = "hmac"
    VERIFY_HMAC = "verify-hmac"
    ROTATE = "rotate"
    UPDATE_ROTATION = "update-rotation"
    EXPORT = "export"
    DISABLE = "disable"
    ENABLE = "enable"
    DELETE = "delete"
    CANCEL_DELETION = "cancel-deletion"
    AUDIT_READ = "audit-read"
    ADMINISTER = "administer"


_CRYPTO = frozenset(
    {
        Action.ENCRYPT,
        Action.DECRYPT,
        Action.SIGN,
        Action.VERIFY,
        Action.HMAC,
        Action.VERIFY_HMAC,
    }
)
_LIFECYCLE = frozenset(
    {
        Action.ROTATE,
        Action.UPDATE_ROTATION,
        Action.DISABLE,
        Action.ENABLE,
        Action.DELETE,
        Action.CANCEL_DELETION,
    }
)
_READ = frozenset({Action.LIST, Action.READ})


def _one(action: Action) -> frozenset[Action]:
    return frozenset({action, Action.READ})


POLICIES: Mapping[str, frozenset[Action]] = {
    "kms:FullAccess": _READ | {Action.CREATE, Action.EXPORT} | _CRYPTO | _LIFECYCLE,
    "kms:ReadAccess": _READ,
    "kms:KeyAdministrator": _READ | {Action.CREATE} | _LIFECYCLE,
    "kms:Encrypt": _one(Action.ENCRYPT),
    "kms:Decrypt": _one(Action.DECRYPT),
    "kms:Sign": _one(Action.SIGN),
    "kms:Verify": _one(Action.VERIFY),
    "kms:Hmac": _one(Action.HMAC),
    "kms:VerifyHmac": _one(Action.VERIFY_HMAC),
    "kms:CryptoUser": _CRYPTO | {Action.READ},
    "audit:ReadAccess": frozenset({Action.AUDIT_READ}),
    # Organisation administrators: projects, service accounts, tokens and role bindings of
    # their organisation (an extension: the contract is silent on administration).
    "iam:Admin": frozenset({Action.ADMINISTER}),
}

#: Policies that only make sense on a whole organisation.
ORGANISATION_ONLY_POLICIES = frozenset({"audit:ReadAccess", "iam:Admin"})


class ScopeKind(StrEnum):
    ORGANISATION = "organisation"
    PROJECT = "project"
    KEY = "key"


@dataclass(frozen=True, slots=True)
class RoleBinding:
    identity: str
    principal_identity: str
    organisation_identity: str
    policy: str
    scope_kind: ScopeKind
    scope_identity: str | None


_NONE: frozenset[Action] = frozenset()


@dataclass(frozen=True, slots=True)
class Grants:
    """What one principal may do inside one organisation, ready for O(1) checks."""

    organisation: frozenset[Action] = _NONE
    projects: Mapping[str, frozenset[Action]] = field(default_factory=dict)
    keys: Mapping[str, frozenset[Action]] = field(default_factory=dict)

    @classmethod
    def from_bindings(cls, bindings: Iterable[RoleBinding]) -> Grants:
        organisation: set[Action] = set()
        projects: dict[str, set[Action]] = {}
        keys: dict[str, set[Action]] = {}
        for binding in bindings:
            actions = POLICIES.get(binding.policy, _NONE)
            if binding.scope_kind is ScopeKind.ORGANISATION:
                organisation |= actions
            elif binding.scope_kind is ScopeKind.PROJECT and binding.scope_identity:
                projects.setdefault(binding.scope_identity, set()).update(actions)
            elif binding.scope_kind is ScopeKind.KEY and binding.scope_identity:
                keys.setdefault(binding.scope_identity, set()).update(actions)
        return cls(
            frozenset(organisation),
            {k: frozenset(v) for k, v in projects.items()},
            {k: frozenset(v) for k, v in keys.items()},
        )

    def in_scope(self, project_identity: str | None) -> frozenset[Action]:
        """Actions on the collection of keys of a scope (organisation keys, or one project's)."""
        if project_identity is None:
            return self.organisation
        return self.organisation | self.projects.get(project_identity, _NONE)

    def on_key(self, key_identity: str, project_identity: str | None) -> frozenset[Action]:
        """Actions on one key: its scope's actions plus those bound to the key itself."""
        return self.in_scope(project_identity) | self.keys.get(key_identity, _NONE)
