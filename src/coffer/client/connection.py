"""Where a client connects, and as whom: arguments, then environment, then a profile file.

Every setting is taken from the first of these that has it:

1. the argument (the SDK's keyword, the CLI's ``--url``/``--token``/``--org``/``--project``/
   ``--region``/``--ca-cert``);
2. the environment: ``COFFER_URL``, ``COFFER_TOKEN``, ``COFFER_ORG``, ``COFFER_PROJECT``,
   ``COFFER_REGION``, ``COFFER_CA_CERT``;
3. the profile named by ``profile`` or ``COFFER_PROFILE`` (default ``default``) in the profile
   file, ``COFFER_PROFILE_FILE`` or ``$XDG_CONFIG_HOME/coffer/profiles.toml`` (by default
   ``~/.config/coffer/profiles.toml``);
4. the defaults: ``http://127.0.0.1:8200`` and region ``nl-01``; HTTPS servers are checked
   against the system's certificate authorities unless ``ca_cert`` names a PEM file of the
   authorities to trust instead (a private CA).

A profile file that holds a token must be readable by its owner alone (``chmod 600``), as
``ssh`` insists for private keys: otherwise it is refused. A profile's token is sent only to
that profile's URL: with a URL from an argument or the environment, it is left out.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from coffer.errors import InvalidRequest

DEFAULT_URL = "http://127.0.0.1:8200"
DEFAULT_REGION = "nl-01"
_FIELDS = ("url", "token", "organisation", "project", "region", "ca_cert")
_ENVIRONMENT = {
    "url": "COFFER_URL",
    "token": "COFFER_TOKEN",
    "organisation": "COFFER_ORG",
    "project": "COFFER_PROJECT",
    "region": "COFFER_REGION",
    "ca_cert": "COFFER_CA_CERT",
}


class ProfileError(InvalidRequest):
    code = "invalid_profile"
    default_message = "the profile file cannot be used"


@dataclass(frozen=True, slots=True)
class Connection:
    url: str = DEFAULT_URL
    token: str | None = None
    organisation: str | None = None
    project: str | None = None
    region: str = DEFAULT_REGION
    #: A PEM file of the certificate authorities an HTTPS server is checked against.
    ca_cert: str | None = None

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        token = "<set>" if self.token else None
        return (
            f"Connection(url={self.url!r}, token={token}, organisation={self.organisation!r}, "
            f"project={self.project!r}, region={self.region!r}, ca_cert={self.ca_cert!r})"
        )

    @classmethod
    def resolve(
        cls,
        *,
        url: str | None = None,
        token: str | None = None,
        organisation: str | None = None,
        project: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        ca_cert: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Connection:
        """The settings from arguments, environment and profile, in that order."""
        env = os.environ if environ is None else environ
        given = {
            "url": url,
            "token": token,
            "organisation": organisation,
            "project": project,
            "region": region,
            "ca_cert": ca_cert,
        }
        from_profile = _read_profile(env, profile)
        chosen: dict[str, str] = {}
        for field in _FIELDS:
            value = given[field] or env.get(_ENVIRONMENT[field]) or from_profile.get(field)
            if value:
                chosen[field] = value
        if (
            "token" in from_profile
            and chosen.get("token") == from_profile["token"]
            and chosen.get("url", DEFAULT_URL) != from_profile.get("url", DEFAULT_URL)
        ):
            # A profile's token goes to the profile's server only, never to a URL set elsewhere.
            del chosen["token"]
        return cls(**chosen)


def profile_path(environ: Mapping[str, str]) -> Path:
    if explicit := environ.get("COFFER_PROFILE_FILE"):
        return Path(explicit)
    home = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(home) / "coffer" / "profiles.toml"


def _read_profile(environ: Mapping[str, str], name: str | None) -> dict[str, str]:
    path = profile_path(environ)
    explicit_name = name or environ.get("COFFER_PROFILE")
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        if explicit_name:
            raise ProfileError(f"profile {explicit_name!r}: {path} does not exist") from None
        return {}
    except OSError as exc:
        raise ProfileError(f"{path}: {exc.strerror}") from None
    try:
        profiles = tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{path} is not valid TOML: {exc}") from None
    chosen = explicit_name or "default"
    section = profiles.get(chosen)
    if section is None:
        if explicit_name:
            raise ProfileError(f"{path} has no profile [{chosen}]")
        return {}
    if not isinstance(section, dict):
        raise ProfileError(f"{path}: [{chosen}] must be a table")
    unknown = sorted(set(section) - set(_FIELDS))
    if unknown:
        raise ProfileError(f"{path}: [{chosen}] has unknown settings {', '.join(unknown)}")
    if any(not isinstance(v, str) for v in section.values()):
        raise ProfileError(f"{path}: the settings of [{chosen}] must be strings")
    if "token" in section and stat.S_IMODE(mode) & 0o077:
        raise ProfileError(f"{path} holds a token and is readable by others: chmod 600 {path}")
    return dict(section)
