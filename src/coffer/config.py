"""Settings: every knob of the server in one place, read once at start (never at import time).

Sources, strongest first: command-line options, ``COFFER_*`` environment variables, the optional
TOML file, and the defaults below.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DATABASE_FILE = "coffer.db"
ROOT_KEY_FILE = "root.key"
ANCHOR_FILE = "audit-anchor.jsonl"
#: Where each optional audit sink's delivery cursor is kept, in the data directory.
SINK_STATE_DIR = "audit-sinks"
#: This node's PKCS #11 settings (the module's path), written by ``coffer init --seal pkcs11``.
SEAL_FILE = "seal.json"
AUDIT_SINKS = ("database", "discard")
#: The settings a config file may set (the rest come from the command line).
FILE_SETTINGS = frozenset(
    {
        "regions",
        "cache_size",
        "database_pool_size",
        "cache_ttl_seconds",
        "max_body_bytes",
        "max_header_bytes",
        "max_headers",
        "header_timeout_seconds",
        "body_timeout_seconds",
        "keep_alive_seconds",
        "max_connections",
        "max_concurrent_requests",
        "max_keys_per_organisation",
        "max_versions_per_key",
        "encryption_budget",
        "expensive_work_threads",
        "expensive_work_queue",
        "log_level",
        "log_format",
        "scheduler_interval_seconds",
        "scheduler_takeover_seconds",
        "deletion_retention_days",
        "byok_wrapping_key_lifetime_days",
        "audit_sink",
        "audit_writer",
        "audit_checkpoint_every",
        "audit_anchor_path",
        "audit_auth_failures_per_minute",
        "audit_retention_days",
        "audit_sinks",
        "rate_limit_per_principal",
        "rate_limit_auth_failures_per_second",
        "oidc",
        "metrics",
        "root_rotation_batch_size",
        "root_rotation_grace_seconds",
        "seal_check_seconds",
    }
)
AUDIT_WRITERS = ("process", "thread")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


class ConfigError(ValueError):
    """The configuration is wrong; the message says what and where."""


@dataclass(frozen=True, slots=True)
class RegionSettings:
    slug: str
    name: str
    kms_available: bool = True
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class OidcSettings:
    """An OpenID Connect issuer whose JWTs are accepted as bearer tokens."""

    issuer: str
    audience: str
    jwks_file: Path | None = None
    jwks_url: str | None = None
    #: A claim naming the project the token acts in (when no ``X-Project-Identity`` is sent).
    project_claim: str | None = None


AUDIT_SINK_TYPES = ("file", "syslog", "http")
SYSLOG_FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditSinkSettings:
    """An audit sink: a copy of every record and checkpoint outside the database
    (``[[audit_sinks]]`` in the config file; docs/audit.md#audit-sinks)."""

    name: str
    type: str
    #: A request succeeds only if this sink accepted its record (else 503, nothing changed).
    required: bool = False
    timeout_seconds: float = 5.0
    #: file: the JSON-lines file, rotated to ``<path>.1`` … ``<path>.<keep>`` past ``max_bytes``.
    path: Path | None = None
    max_bytes: int = 100 << 20
    keep: int = 10
    #: syslog: ``unix:/dev/log``, ``udp://host:port`` or ``tcp://host:port``.
    address: str | None = None
    facility: str = "local0"
    app_name: str = "coffer"
    #: http: records are POSTed in batches (JSON lines) to ``url``, with the bearer token read
    #: from the environment variable ``token_env`` (secrets stay out of the file).
    url: str | None = None
    token_env: str | None = None
    batch_records: int = 500


DEFAULT_REGIONS = (RegionSettings(slug="nl-01", name="Netherlands 01", kms_available=True),)


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8200
    regions: tuple[RegionSettings, ...] = DEFAULT_REGIONS
    tls_cert: Path | None = None
    tls_key: Path | None = None
    database_url: str | None = None
    #: Server processes behind the one port (``coffer serve --workers``).
    workers: int = 1
    #: PostgreSQL connections each server process keeps open (as many more are opened at peaks).
    database_pool_size: int = 10
    #: Keys, tokens and memberships kept in memory, each.
    cache_size: int = 100_000
    #: Safety net: how long a cached key, token or membership is trusted without a change event.
    cache_ttl_seconds: float = 30.0
    #: Largest request body accepted (a 65,535-byte plaintext is ~87 KiB of JSON).
    max_body_bytes: int = 1 << 20
    #: A request's line and headers, in bytes and in fields (beyond: 431).
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    #: How long a connection may take to send a request's line and headers (from its opening,
    #: or the previous response), and then its body (beyond: 408, or closed).
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    #: How long an idle keep-alive connection stays open.
    keep_alive_seconds: float = 5.0
    #: Open connections per server process (kept below its open-file limit); when full, the
    #: oldest connection waiting for a request is closed, or the newcomer gets 503.
    max_connections: int = 4096
    #: Requests in progress per server process (beyond: 503 ``busy`` with ``Retry-After``).
    max_concurrent_requests: int = 1024
    log_level: str = "info"
    #: ``text`` (``<time> <LEVEL> <logger>: <message>``) or ``json`` (an object a line, for log
    #: shippers), for every process of the server.
    log_format: str = "text"
    #: How often the scheduler looks for keys due for rotation or purge.
    scheduler_interval_seconds: float = 3600.0
    #: With several nodes on PostgreSQL, how often a node that does not run the background jobs
    #: checks whether the node that does is gone (and takes over).
    scheduler_takeover_seconds: float = 10.0
    #: Quotas: keys an organisation may hold (every state until purged), versions a key may
    #: have (beyond: 409 ``quota_exceeded``).
    max_keys_per_organisation: int = 10_000
    max_versions_per_key: int = 1_000
    #: Encryptions one AES-GCM or ChaCha20-Poly1305 key version may make (random 96-bit nonces:
    #: at most 2^32, NIST SP 800-38D); then the key rotates by itself, or (imported material
    #: that may not rotate) refuses to encrypt.
    encryption_budget: int = 1 << 30
    #: RSA key generation, BYOK unwrapping and RSA private-key operations run on a pool of this
    #: many threads per server process (0: one per core), taking at most ``expensive_work_queue``
    #: jobs at once (beyond: 503 ``busy``).
    expensive_work_threads: int = 0
    expensive_work_queue: int = 64
    #: How long a deleted key stays pending before it is purged (at least one day).
    deletion_retention_days: int = 30
    #: How long an organisation's BYOK wrapping key is handed out before a successor is made (the
    #: one before is still accepted for 24 hours after that).
    byok_wrapping_key_lifetime_days: int = 30
    #: ``database`` (durable, hash-chained) or ``discard`` (only to measure what the audit costs).
    audit_sink: str = "database"
    #: ``process``: records are built and committed by a writer process of their own (another
    #: core, no GIL shared with the event loop); ``thread``: by a worker thread of the server.
    audit_writer: str = "process"
    #: A signed checkpoint of the audit chain every this many records (and at shutdown).
    audit_checkpoint_every: int = 1000
    #: The file outside the database every checkpoint is also appended to (``None``: the data
    #: directory's ``audit-anchor.jsonl``). Put it on another disk than the database.
    audit_anchor_path: Path | None = None
    #: Failed authentications recorded one by one per source address and minute; the rest are
    #: counted into one ``auth.failures.suppressed`` record per source and minute.
    audit_auth_failures_per_minute: int = 60
    #: Audit records older than this many days are pruned (``None``: kept for ever).
    audit_retention_days: int | None = None
    #: Requests per second one principal may make to one server process (0: no limit); beyond,
    #: 429 ``rate_limited`` with ``Retry-After``.
    rate_limit_per_principal: float = 20_000.0
    #: Failed authentications per second one source address may make to one server process (0:
    #: no limit); beyond, 429 instead of 401.
    rate_limit_auth_failures_per_second: float = 20.0
    #: Copies of the log outside the database: files, syslog, HTTP collectors.
    audit_sinks: tuple[AuditSinkSettings, ...] = ()
    #: OpenID Connect bearer tokens (``None``: only Coffer's own tokens).
    oidc: OidcSettings | None = None
    #: ``GET /metrics`` (Prometheus text format) and the counting behind it.
    metrics: bool = True
    #: Blobs (organisation KEKs, …) rewrapped per transaction by a root rotation.
    root_rotation_batch_size: int = 500
    #: File seal: how long a root rotation keeps the new key's transit copy, so that every
    #: node can take the new key before the old one is retired (docs/security.md).
    root_rotation_grace_seconds: float = 10.0
    #: How often each server looks at its seal: whether the PKCS #11 token is still there (or,
    #: while it is away, back), and whether another node began or completed a root rotation.
    seal_check_seconds: float = 2.0

    @property
    def database_path(self) -> Path:
        return self.data_dir / DATABASE_FILE

    @property
    def root_key_path(self) -> Path:
        return self.data_dir / ROOT_KEY_FILE

    @property
    def anchor_path(self) -> Path:
        return self.audit_anchor_path or self.data_dir / ANCHOR_FILE

    @property
    def url(self) -> str:
        """The SQLAlchemy URL: embedded SQLite in the data directory, or the PostgreSQL of
        ``database_url`` (``postgresql://…``, driven by psycopg)."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{self.database_path}"
        for scheme in ("postgresql://", "postgres://"):
            if self.database_url.startswith(scheme):
                return "postgresql+psycopg://" + self.database_url.removeprefix(scheme)
        return self.database_url


def _regions(raw: Any, source: str) -> tuple[RegionSettings, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: 'regions' must be a non-empty array of tables")
    regions: list[RegionSettings] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"{source}: regions[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = set(item) - {"slug", "name", "kms_available", "identity"}
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
        slug = item.get("slug")
        if not isinstance(slug, str) or _SLUG.fullmatch(slug) is None:
            raise ConfigError(f"{where}: 'slug' must be lowercase letters, digits and '-'")
        name = item.get("name", slug)
        available = item.get("kms_available", True)
        identity = item.get("identity")
        if not isinstance(name, str) or not isinstance(available, bool):
            raise ConfigError(f"{where}: 'name' must be a string, 'kms_available' a boolean")
        if identity is not None and not isinstance(identity, str):
            raise ConfigError(f"{where}: 'identity' must be a string")
        for ref in {slug, identity or slug}:
            if ref in seen:
                raise ConfigError(f"{where}: region {ref!r} is configured twice")
            seen.add(ref)
        regions.append(RegionSettings(slug, name, available, identity))
    return tuple(regions)


def _oidc(raw: Any, source: str) -> OidcSettings:
    where = f"{source}: [oidc]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - {"issuer", "audience", "jwks_file", "jwks_url", "project_claim"}
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    for name in ("issuer", "audience"):
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise ConfigError(f"{where}: '{name}' is required (a string)")
    if ("jwks_file" in raw) == ("jwks_url" in raw):
        raise ConfigError(f"{where}: give exactly one of 'jwks_file' and 'jwks_url'")
    for name in ("jwks_file", "jwks_url", "project_claim"):
        if name in raw and not isinstance(raw[name], str):
            raise ConfigError(f"{where}: '{name}' must be a string")
    url = raw.get("jwks_url")
    if url is not None:
        parsed = urlsplit(url)
        local = parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost", "::1")
        if not (parsed.scheme == "https" or local) or parsed.username or not parsed.hostname:
            raise ConfigError(f"{where}: 'jwks_url' must be https (or http on this host)")
    return OidcSettings(
        issuer=raw["issuer"],
        audience=raw["audience"],
        jwks_file=Path(raw["jwks_file"]) if "jwks_file" in raw else None,
        jwks_url=url,
        project_claim=raw.get("project_claim"),
    )


_SINK_KEYS = {
    "file": {"path", "max_bytes", "keep"},
    "syslog": {"address", "facility", "app_name"},
    "http": {"url", "token_env", "batch_records"},
}
_SINK_COMMON = {"name", "type", "required", "timeout_seconds"}


def _audit_sinks(raw: Any, path: str) -> tuple[AuditSinkSettings, ...]:
    if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
        raise ConfigError(f"{path}: 'audit_sinks' must be an array of tables ([[audit_sinks]])")
    sinks = []
    for number, entry in enumerate(raw, start=1):
        sinks.append(_audit_sink(entry, f"{path}: audit sink {number}"))
    names = [sink.name for sink in sinks]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: audit sink names must differ")
    return tuple(sinks)


def _audit_sink(raw: dict[str, Any], where: str) -> AuditSinkSettings:
    kind = raw.get("type")
    if kind not in AUDIT_SINK_TYPES:
        raise ConfigError(f"{where}: 'type' must be one of {', '.join(AUDIT_SINK_TYPES)}")
    unknown = set(raw) - _SINK_COMMON - _SINK_KEYS[kind]
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not _SLUG.fullmatch(name) or len(name) > 64:
        raise ConfigError(f"{where}: 'name' must be a slug (a-z, 0-9, dashes)")
    where = f"{where} ({name})"
    values: dict[str, Any] = {"name": name, "type": kind}
    if "required" in raw:
        if not isinstance(raw["required"], bool):
            raise ConfigError(f"{where}: 'required' must be true or false")
        values["required"] = raw["required"]
    if "timeout_seconds" in raw:
        seconds = raw["timeout_seconds"]
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
            raise ConfigError(f"{where}: 'timeout_seconds' must be a positive number")
        values["timeout_seconds"] = float(seconds)
    for key in ("max_bytes", "keep", "batch_records"):
        if key in raw:
            if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 1:
                raise ConfigError(f"{where}: '{key}' must be a positive integer")
            values[key] = raw[key]
    for key in ("path", "address", "url", "token_env", "facility", "app_name"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    if kind == "file":
        if "path" not in raw:
            raise ConfigError(f"{where}: 'path' is required")
        values["path"] = Path(raw["path"])
    elif kind == "syslog":
        address = raw.get("address", "unix:/dev/log")
        parsed = urlsplit(address)
        network = parsed.scheme in ("udp", "tcp") and parsed.hostname and parsed.port
        if not (network or (address.startswith("unix:") and len(address) > 5)):
            raise ConfigError(
                f"{where}: 'address' must be unix:/path, udp://host:port or tcp://host:port"
            )
        values["address"] = address
        facility = raw.get("facility", "local0")
        if facility not in SYSLOG_FACILITIES:
            raise ConfigError(f"{where}: 'facility' must be a syslog facility, e.g. local0")
        values["facility"] = facility
        app = raw.get("app_name", "coffer")
        if not app.isascii() or not app.isprintable() or " " in app or len(app) > 48:
            raise ConfigError(f"{where}: 'app_name' must be up to 48 printable ASCII characters")
        values["app_name"] = app
    else:
        url = raw.get("url")
        if url is None:
            raise ConfigError(f"{where}: 'url' is required")
        parsed = urlsplit(url)
        local = parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost", "::1")
        if not (parsed.scheme == "https" or local) or parsed.username or not parsed.hostname:
            raise ConfigError(f"{where}: 'url' must be https (or http on this host)")
        values["url"] = url
        if "token_env" in raw:
            values["token_env"] = raw["token_env"]
    return AuditSinkSettings(**values)


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a TOML file, checked; keys match ``Settings`` fields."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = set(raw) - FILE_SETTINGS
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    if "regions" in raw:
        values["regions"] = _regions(raw["regions"], str(path))
    if "oidc" in raw:
        values["oidc"] = _oidc(raw["oidc"], str(path))
    if "audit_sinks" in raw:
        values["audit_sinks"] = _audit_sinks(raw["audit_sinks"], str(path))
    for name in (
        "cache_size",
        "database_pool_size",
        "max_body_bytes",
        "max_header_bytes",
        "max_headers",
        "max_connections",
        "max_concurrent_requests",
        "max_keys_per_organisation",
        "max_versions_per_key",
        "expensive_work_queue",
        "audit_checkpoint_every",
        "audit_auth_failures_per_minute",
        "audit_retention_days",
        "root_rotation_batch_size",
    ):
        if name in raw:
            if not isinstance(raw[name], int) or isinstance(raw[name], bool) or raw[name] < 1:
                raise ConfigError(f"{path}: '{name}' must be a positive integer")
            values[name] = raw[name]
    for name in (
        "cache_ttl_seconds",
        "header_timeout_seconds",
        "body_timeout_seconds",
        "keep_alive_seconds",
        "scheduler_interval_seconds",
        "scheduler_takeover_seconds",
        "seal_check_seconds",
    ):
        if name in raw:
            seconds = raw[name]
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
                raise ConfigError(f"{path}: '{name}' must be a positive number")
            values[name] = float(seconds)
    for name in ("rate_limit_per_principal", "rate_limit_auth_failures_per_second"):
        if name in raw:
            rate = raw[name]
            if not isinstance(rate, int | float) or isinstance(rate, bool) or rate < 0:
                raise ConfigError(f"{path}: '{name}' must be a number, at least 0 (0: no limit)")
            values[name] = float(rate)
    if "expensive_work_threads" in raw:
        threads = raw["expensive_work_threads"]
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise ConfigError(
                f"{path}: 'expensive_work_threads' must be a whole number, at least 0"
            )
        values["expensive_work_threads"] = threads
    if "encryption_budget" in raw:
        budget = raw["encryption_budget"]
        if not isinstance(budget, int) or isinstance(budget, bool) or not 1 <= budget <= 1 << 32:
            raise ConfigError(f"{path}: 'encryption_budget' must be a whole number, 1 to 2^32")
        values["encryption_budget"] = budget
    if "root_rotation_grace_seconds" in raw:
        grace = raw["root_rotation_grace_seconds"]
        if not isinstance(grace, int | float) or isinstance(grace, bool) or grace < 0:
            raise ConfigError(f"{path}: 'root_rotation_grace_seconds' must be a number, at least 0")
        values["root_rotation_grace_seconds"] = float(grace)
    for name in ("deletion_retention_days", "byok_wrapping_key_lifetime_days"):
        if name in raw:
            days = raw[name]
            if not isinstance(days, int) or isinstance(days, bool) or days < 1:
                raise ConfigError(f"{path}: '{name}' must be a whole number, at least 1")
            values[name] = days
    if "audit_anchor_path" in raw:
        anchor = raw["audit_anchor_path"]
        if not isinstance(anchor, str) or not anchor:
            raise ConfigError(f"{path}: 'audit_anchor_path' must be a file path")
        values["audit_anchor_path"] = Path(anchor)
    if "audit_sink" in raw:
        if raw["audit_sink"] not in AUDIT_SINKS:
            raise ConfigError(f"{path}: 'audit_sink' must be one of {', '.join(AUDIT_SINKS)}")
        values["audit_sink"] = raw["audit_sink"]
    if "audit_writer" in raw:
        if raw["audit_writer"] not in AUDIT_WRITERS:
            raise ConfigError(f"{path}: 'audit_writer' must be one of {', '.join(AUDIT_WRITERS)}")
        values["audit_writer"] = raw["audit_writer"]
    if "metrics" in raw:
        if not isinstance(raw["metrics"], bool):
            raise ConfigError(f"{path}: 'metrics' must be true or false")
        values["metrics"] = raw["metrics"]
    if "log_level" in raw:
        if raw["log_level"] not in LOG_LEVELS:
            raise ConfigError(f"{path}: 'log_level' must be one of {', '.join(LOG_LEVELS)}")
        values["log_level"] = raw["log_level"]
    if "log_format" in raw:
        if raw["log_format"] not in LOG_FORMATS:
            raise ConfigError(f"{path}: 'log_format' must be one of {', '.join(LOG_FORMATS)}")
        values["log_format"] = raw["log_format"]
    return values


def load_settings(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8200,
    config_file: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    database_url: str | None = None,
    workers: int = 1,
    log_format: str | None = None,
) -> Settings:
    values = read_config_file(config_file) if config_file is not None else {}
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if log_format is not None:  # the command line's (or COFFER_LOG_FORMAT) over the file's
        if log_format not in LOG_FORMATS:
            raise ConfigError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
        values["log_format"] = log_format
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    return Settings(
        data_dir=data_dir,
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        database_url=database_url,
        workers=workers,
        **values,
    )


@dataclass(frozen=True, slots=True)
class Pkcs11Environment:
    """This node's PKCS #11 settings from the environment: the module and token label override
    what ``coffer init`` recorded (another path on this host); the PIN is only ever read from
    here (``COFFER_PKCS11_PIN``), never stored."""

    library: str | None
    token: str | None
    pin: str | None = field(repr=False)


def pkcs11_environment() -> Pkcs11Environment:
    return Pkcs11Environment(
        library=os.environ.get("COFFER_PKCS11_LIBRARY") or None,
        token=os.environ.get("COFFER_PKCS11_TOKEN") or None,
        pin=os.environ.get("COFFER_PKCS11_PIN") or None,
    )


def read_seal_file(data_dir: Path) -> dict[str, str]:
    """This node's recorded PKCS #11 settings (``{}`` if there is no ``seal.json``)."""
    path = data_dir / SEAL_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError(f"{path} must be a JSON object of strings")
    return raw


def write_seal_file(data_dir: Path, values: dict[str, str]) -> None:
    """Record this node's PKCS #11 settings (mode 0600, put in place whole)."""
    path = data_dir / SEAL_FILE
    part = path.with_name(f"{SEAL_FILE}.{os.getpid()}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(values, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(part, path)
