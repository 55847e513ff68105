"""OpenID Connect bearer tokens: JWTs signed by a configured issuer (RFC 7519, RFC 7517).

Only asymmetric algorithms are accepted, so a token signed with ``alg: none`` or with HMAC over
the issuer's public key (the classic algorithm confusion) is refused; ``exp``, ``iss``, ``aud``
and ``sub`` are required and checked. The signing keys come from a JWKS file or URL (fetched
with a cache, looked up by ``kid``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from coffer.config import OidcSettings
from coffer.errors import Unauthenticated, Unavailable

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
              "EdDSA"]  # fmt: skip
MAX_SUBJECT_LENGTH = 255
#: Clock skew tolerated on ``exp`` and ``nbf``.
LEEWAY_SECONDS = 30


@dataclass(frozen=True, slots=True)
class OidcClaims:
    issuer: str
    subject: str
    project: str | None


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class OidcVerifier:
    def __init__(self, settings: OidcSettings) -> None:
        self._settings = settings
        self._keys: jwt.PyJWKSet | None = None
        self._client: jwt.PyJWKClient | None = None
        if settings.jwks_file is not None:
            self._keys = jwt.PyJWKSet.from_json(settings.jwks_file.read_text(encoding="utf-8"))
        else:
            assert settings.jwks_url is not None
            self._client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, timeout=5)

    def _signing_key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise jwt.InvalidTokenError("no key of the issuer has this kid")

    def verify(self, token: str) -> OidcClaims:
        """The token's claims, or ``Unauthenticated`` (blocking: a JWKS URL may be fetched)."""
        try:
            key = self._signing_key(token)
        except jwt.PyJWKClientConnectionError:
            raise Unavailable("the identity provider's signing keys cannot be fetched") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthenticated() from None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthenticated() from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT_LENGTH:
            raise Unauthenticated()
        project = None
        if self._settings.project_claim is not None:
            value = claims.get(self._settings.project_claim)
            project = value if isinstance(value, str) and value else None
        return OidcClaims(self._settings.issuer, subject, project)
