from __future__ import annotations

from coffer.domain.permissions import POLICIES, Action, Grants, RoleBinding, ScopeKind


def binding(policy: str, kind: ScopeKind, scope: str | None = None) -> RoleBinding:
    return RoleBinding("rb-1", "usr-1", "org-1", policy, kind, scope)


def test_organisation_binding_covers_every_scope_of_the_organisation() -> None:
    grants = Grants.from_bindings([binding("kms:FullAccess", ScopeKind.ORGANISATION)])
    assert Action.CREATE in grants.in_scope(None)
    assert Action.CREATE in grants.in_scope("prj-1")
    assert Action.ENCRYPT in grants.on_key("kms-1", "prj-1")


def test_project_binding_covers_only_that_project() -> None:
    grants = Grants.from_bindings([binding("kms:CryptoUser", ScopeKind.PROJECT, "prj-1")])
    assert grants.in_scope(None) == frozenset()
    assert Action.ENCRYPT in grants.on_key("kms-1", "prj-1")
    assert grants.on_key("kms-1", "prj-2") == frozenset()


def test_key_binding_covers_only_that_key() -> None:
    grants = Grants.from_bindings([binding("kms:Encrypt", ScopeKind.KEY, "kms-1")])
    assert grants.on_key("kms-1", None) == {Action.ENCRYPT, Action.READ}
    assert grants.on_key("kms-2", None) == frozenset()
    assert Action.LIST not in grants.in_scope(None)


def test_effective_permission_is_the_union_of_bindings() -> None:
    grants = Grants.from_bindings(
        [
            binding("kms:Encrypt", ScopeKind.KEY, "kms-1"),
            binding("kms:Decrypt", ScopeKind.KEY, "kms-1"),
            binding("kms:ReadAccess", ScopeKind.ORGANISATION),
        ]
    )
    assert grants.on_key("kms-1", None) >= {Action.ENCRYPT, Action.DECRYPT, Action.LIST}


def test_key_administrators_cannot_use_or_export_keys() -> None:
    admin = POLICIES["kms:KeyAdministrator"]
    assert {Action.CREATE, Action.ROTATE, Action.DISABLE, Action.DELETE} <= admin
    assert not admin & {Action.ENCRYPT, Action.DECRYPT, Action.SIGN, Action.EXPORT}


def test_read_access_has_no_crypto_and_no_lifecycle() -> None:
    assert POLICIES["kms:ReadAccess"] == {Action.LIST, Action.READ}


def test_unknown_policy_grants_nothing() -> None:
    grants = Grants.from_bindings([binding("kms:Everything", ScopeKind.ORGANISATION)])
    assert grants.in_scope(None) == frozenset()
