"""Authentication and organisation membership, cached for the hot path (spec §1.1 steps 1–3)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from coffer.crypto.integrity import token_sha256
from coffer.domain.identity import user_identity
from coffer.domain.permissions import Grants
from coffer.domain.tenants import Principal, PrincipalKind
from coffer.errors import Forbidden, OrganisationRequired, Unauthenticated
from coffer.iam.oidc import OidcVerifier, looks_like_jwt
from coffer.metrics import CacheMeter
from coffer.service.caches import Cache
from coffer.service.context import Caller
from coffer.storage.repositories import Store, TokenRecord

MAX_TOKEN_LENGTH = 512
#: JWTs carry claims and a signature: longer than Coffer's own tokens, but bounded too.
MAX_OIDC_TOKEN_LENGTH = 8192
MAX_REF_LENGTH = 255
UNKNOWN_TOKEN_TTL = 5.0


class AccessService:
    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        *,
        cache_size: int,
        cache_ttl: float,
        timer: Callable[[], float],
        stored_digest: Callable[[bytes], bytes],
        oidc: OidcVerifier | None = None,
        metered: bool = False,
    ) -> None:
        """``stored_digest``: a token's stored (keyed) digest, given the token's plain SHA-256
        (``PurposeKeys.token_digest_of_sha256``). The caches are keyed by the plain SHA-256, in
        memory only: a warm request computes no HMAC."""
        self._store = store
        self._stored_digest = stored_digest
        self._clock = clock
        self._oidc = oidc
        self._oidc_threads = (
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="coffer-oidc") if oidc else None
        )
        self._tokens: Cache[bytes, TokenRecord] = Cache(
            cache_size, cache_ttl, timer, CacheMeter("token") if metered else None
        )
        # Unknown tokens are remembered briefly, so that a flood of bad tokens is not a flood of
        # database reads. A new token cannot be among them: it is 256 fresh random bits.
        self._unknown: Cache[bytes, bool] = Cache(cache_size, UNKNOWN_TOKEN_TTL, timer)
        self._callers: Cache[tuple[str, str, str | None], Caller] = Cache(
            cache_size, cache_ttl, timer, CacheMeter("caller") if metered else None
        )

    async def authenticate(self, token: str | None) -> Principal:
        """The principal a bearer token belongs to; ``Unauthenticated`` for anything else."""
        principal, _ = await self.authenticate_claims(token)
        return principal

    async def authenticate_claims(self, token: str | None) -> tuple[Principal, str | None]:
        """The principal, and the project an OpenID Connect token names (if any)."""
        if not token or len(token) > MAX_OIDC_TOKEN_LENGTH:
            raise Unauthenticated()
        if self._oidc is not None and looks_like_jwt(token):
            digest = token_sha256(token)
            if self._unknown.get(digest):
                raise Unauthenticated()
            try:
                # Its own few threads: a slow identity provider must not hold up the threads
                # that RSA, key generation and the audit log use.
                claims = await asyncio.get_running_loop().run_in_executor(
                    self._oidc_threads, self._oidc.verify, token
                )
            except Unauthenticated:
                self._unknown.put(digest, True)
                raise
            user = Principal(
                identity=user_identity(claims.issuer, claims.subject),
                kind=PrincipalKind.USER,
                name=claims.subject,
                platform_admin=False,
                created_at=self._clock(),
            )
            return user, claims.project
        return await self._coffer_token(token), None

    async def _coffer_token(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated()
        digest = token_sha256(token)
        if self._unknown.get(digest):
            raise Unauthenticated()
        record = await self._tokens.get_or_load(
            digest, lambda: self._store.find_token(self._stored_digest(digest))
        )
        if record is None:
            self._unknown.put(digest, True)
            raise Unauthenticated()
        if record.revoked_at is not None or (
            record.expires_at is not None and record.expires_at <= self._clock()
        ):
            raise Unauthenticated()
        return record.principal

    async def caller(
        self,
        principal: Principal,
        organisation_ref: str | None,
        project_ref: str | None,
    ) -> Caller:
        """The principal acting in an organisation it is a member of (``Forbidden`` otherwise)."""
        if not organisation_ref:
            raise OrganisationRequired()
        if len(organisation_ref) > MAX_REF_LENGTH or len(project_ref or "") > MAX_REF_LENGTH:
            raise Forbidden()
        caller = await self._callers.get_or_load(
            (principal.identity, organisation_ref, project_ref or None),
            lambda: self._load_caller(principal, organisation_ref, project_ref),
        )
        assert caller is not None
        return caller

    async def _load_caller(
        self, principal: Principal, organisation_ref: str, project_ref: str | None
    ) -> Caller:
        organisation = await self._store.find_organisation(organisation_ref)
        if organisation is None:
            raise Forbidden()
        bindings = await self._store.bindings(principal.identity, organisation.identity)
        if not bindings:
            # Same answer as for an organisation that does not exist: never reveal which.
            raise Forbidden()
        project = None
        if project_ref:
            project = await self._store.find_project(organisation.identity, project_ref)
            if project is None:
                raise Forbidden("project not found or not accessible")
        return Caller(principal, organisation, project, Grants.from_bindings(bindings))

    def forget_all(self) -> None:
        """Drop every cached token and membership (after a change to tokens or bindings)."""
        self._tokens.clear()
        self._unknown.clear()
        self._callers.clear()
