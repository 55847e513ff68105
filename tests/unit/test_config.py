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
        "this is not toml",
    ],
)
def test_bad_config_files_are_refused_with_the_file_named(tmp_path: Path, text: str) -> None:
    config = tmp_path / "coffer.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"coffer\.toml"):
        load_settings(tmp_path, config_file=config)


def test_tls_needs_both_certificate_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="together"):
        load_settings(tmp_path, tls_cert=tmp_path / "cert.pem")
