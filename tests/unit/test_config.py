from __future__ import annotations

from pathlib import Path

import pytest

from coffer.config import DEFAULT_REGIONS, ConfigError, load_settings


def test_default_is_one_region_nl_01_with_kms(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings.regions == DEFAULT_REGIONS
    assert [(r.slug, r.kms_available) for r in settings.regions] == [("nl-01", True)]
    assert settings.url == f"sqlite+aiosqlite:///{tmp_path / 'coffer.db'}"


def test_regions_come_from_the_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "coffer.toml"
    config.write_text(
        "cache_ttl_seconds = 5\n"
        '[[regions]]\nslug = "nl-01"\nname = "Amsterdam"\n'
        '[[regions]]\nslug = "de-01"\nname = "Frankfurt"\nkms_available = false\n'
    )
    settings = load_settings(tmp_path, config_file=config)
    assert [(r.slug, r.name, r.kms_available) for r in settings.regions] == [
        ("nl-01", "Amsterdam", True),
        ("de-01", "Frankfurt", False),
    ]
    assert settings.cache_ttl_seconds == 5.0


@pytest.mark.parametrize(
    "text",
    [
        "regions = 3",
        "regions = []",
        '[[regions]]\nslug = "NL 01"',
        '[[regions]]\nslug = "nl-01"\nkms_available = "yes"',
        '[[regions]]\nslug = "nl-01"\ncolour = "red"',
        '[[regions]]\nslug = "nl-01"\n[[regions]]\nslug = "nl-01"',
        "unknown_setting = 1",
        "cache_size = 0",
        "cache_size = true",
        'log_level = "loud"',
        'log_format = "xml"',
        'metrics = "yes"',
        "this is not toml",
    ],
)
def test_bad_config_files_are_refused_with_the_file_named(tmp_path: Path, text: str) -> None:
    config = tmp_path / "coffer.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"coffer\.toml"):
        load_settings(tmp_path, config_file=config)


def test_the_log_format_of_the_command_line_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "coffer.toml"
    config.write_text('log_format = "json"')
    assert load_settings(tmp_path).log_format == "text"
    assert load_settings(tmp_path, config_file=config).log_format == "json"
    assert load_settings(tmp_path, config_file=config, log_format="text").log_format == "text"
    with pytest.raises(ConfigError, match="--log-format"):
        load_settings(tmp_path, log_format="xml")


def test_tls_needs_both_certificate_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="together"):
        load_settings(tmp_path, tls_cert=tmp_path / "cert.pem")


def test_the_documented_example_config_loads_with_every_setting(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    text = docs.read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    # Uncomment the optional lines too: each documented setting must be accepted.
    example = "\n".join(
        line[2:] if line.startswith("# ") and "=" in line.split("#")[1] else line
        for line in example.splitlines()
    )
    config = tmp_path / "coffer.toml"
    config.write_text(example)
    settings = load_settings(tmp_path, config_file=config)
    assert settings.audit_sink == "discard"
    assert settings.audit_retention_days == 365
    assert settings.scheduler_interval_seconds == 3600.0
    assert settings.deletion_retention_days == 30
    assert settings.metrics is True
    assert (settings.rate_limit_per_principal, settings.rate_limit_auth_failures_per_second) == (
        20000.0, 20.0,
    )  # fmt: skip
    assert [(r.slug, r.identity) for r in settings.regions] == [("nl-01", "nl-01")]


def test_every_file_setting_is_a_settings_field() -> None:
    from dataclasses import fields

    from coffer.config import FILE_SETTINGS, Settings

    assert {f.name for f in fields(Settings)} >= FILE_SETTINGS


def test_the_documented_oidc_section_loads(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    section = docs.read_text().split("## OpenID Connect", 1)[1]
    config = tmp_path / "coffer.toml"
    config.write_text(section.split("```toml\n", 1)[1].split("```", 1)[0])
    oidc = load_settings(tmp_path, config_file=config).oidc
    assert oidc is not None
    assert (oidc.issuer, oidc.audience, oidc.project_claim) == (
        "https://login.example.com", "coffer", "coffer_project",
    )  # fmt: skip
    assert oidc.jwks_url == "https://login.example.com/.well-known/jwks.json"


@pytest.mark.parametrize(
    "text",
    [
        '[oidc]\naudience = "coffer"\njwks_file = "j.json"',
        '[oidc]\nissuer = "https://i"\naudience = "coffer"',
        '[oidc]\nissuer = "https://i"\naudience = "c"\njwks_file = "j"\njwks_url = "https://j"',
        '[oidc]\nissuer = "https://i"\naudience = "c"\njwks_url = "http://example.com/j"',
        '[oidc]\nissuer = "https://i"\naudience = "c"\njwks_url = "http://localhost.evil.test/j"',
        '[oidc]\nissuer = "https://i"\naudience = "c"\njwks_url = "http://127.0.0.1@evil.test/j"',
        '[oidc]\nissuer = "https://i"\naudience = "c"\njwks_file = "j"\nalgorithms = ["none"]',
        'oidc = "yes"',
    ],
)
def test_bad_oidc_settings_are_refused(tmp_path: Path, text: str) -> None:
    config = tmp_path / "coffer.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"coffer\.toml"):
        load_settings(tmp_path, config_file=config)


def test_the_documented_audit_sinks_load(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    section = docs.read_text().split("## Audit sinks", 1)[1]
    config = tmp_path / "coffer.toml"
    config.write_text(section.split("```toml\n", 1)[1].split("```", 1)[0])
    file, syslog, http = load_settings(tmp_path, config_file=config).audit_sinks
    assert (file.type, file.required, file.path, file.max_bytes, file.keep) == (
        "file", True, Path("/var/log/coffer/audit.jsonl"), 100 << 20, 10,
    )  # fmt: skip
    assert (syslog.address, syslog.facility, syslog.required) == ("unix:/dev/log", "local0", False)
    assert (http.url, http.token_env, http.batch_records, http.timeout_seconds) == (
        "https://siem.example.com/ingest/coffer", "COFFER_SIEM_TOKEN", 500, 5.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('audit_sinks = "file"', "must be an array of tables"),
        ('[[audit_sinks]]\nname = "a"\ntype = "kafka"', "'type' must be one of file, syslog, http"),
        ('[[audit_sinks]]\nname = "A B"\ntype = "file"\npath = "x"', "'name' must be a slug"),
        ('[[audit_sinks]]\nname = "a"\ntype = "file"', "'path' is required"),
        ('[[audit_sinks]]\nname = "a"\ntype = "file"\npath = "x"\nurl = "https://x"',
         r"unknown setting\(s\) url"),
        ('[[audit_sinks]]\nname = "a"\ntype = "file"\npath = "x"\nrequired = "yes"',
         "'required' must be true or false"),
        ('[[audit_sinks]]\nname = "a"\ntype = "file"\npath = "x"\nmax_bytes = 0',
         "'max_bytes' must be a positive integer"),
        ('[[audit_sinks]]\nname = "a"\ntype = "syslog"\naddress = "/dev/log"', "'address' must be"),
        ('[[audit_sinks]]\nname = "a"\ntype = "syslog"\naddress = "udp://h"', "'address' must be"),
        ('[[audit_sinks]]\nname = "a"\ntype = "syslog"\nfacility = "local9"', "'facility'"),
        ('[[audit_sinks]]\nname = "a"\ntype = "http"', "'url' is required"),
        ('[[audit_sinks]]\nname = "a"\ntype = "http"\nurl = "http://example.com/x"',
         "'url' must be https"),
        ('[[audit_sinks]]\nname = "a"\ntype = "http"\nurl = "https://x"\ntimeout_seconds = 0',
         "'timeout_seconds' must be a positive number"),
        ('[[audit_sinks]]\nname = "a"\ntype = "http"\nurl = "https://x"\n'
         '[[audit_sinks]]\nname = "a"\ntype = "file"\npath = "x"', "names must differ"),
    ],
)  # fmt: skip
def test_bad_audit_sinks_are_refused_with_what_is_wrong(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "coffer.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, config_file=config)


def test_a_missing_bearer_token_of_an_http_sink_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from coffer.audit.sinks import destination_of
    from coffer.config import AuditSinkSettings

    monkeypatch.delenv("COFFER_SIEM_TOKEN", raising=False)
    sink = AuditSinkSettings(
        name="siem", type="http", url="https://x", token_env="COFFER_SIEM_TOKEN"
    )
    with pytest.raises(ConfigError, match=r"COFFER_SIEM_TOKEN .* is not set"):
        destination_of(sink)


@pytest.mark.parametrize(
    "name", ["rate_limit_per_principal", "rate_limit_auth_failures_per_second"]
)
@pytest.mark.parametrize("value", ["-1", '"fast"', "true"])
def test_rate_limits_must_be_numbers_at_least_zero(tmp_path: Path, name: str, value: str) -> None:
    config = tmp_path / "coffer.toml"
    config.write_text(f"{name} = {value}\n")
    with pytest.raises(ConfigError, match=f"'{name}' must be a number, at least 0"):
        load_settings(tmp_path, config_file=config)
