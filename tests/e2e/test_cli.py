"""``coffer init`` and ``coffer serve`` as an operator meets them: real processes, exit codes,
messages on stderr, files on disk."""

from __future__ import annotations

import json
import random
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.processes import ServeFactory, free_port, http_get, http_post, run_coffer

pytestmark = pytest.mark.slow

INIT_KEYS = {"organisation", "organisationSlug", "principal", "token", "tokenExpiresAt",
             "installation", "seal"}  # fmt: skip


@dataclass(frozen=True)
class Initialised:
    data_dir: Path
    organisation: str
    token: str
    stdout: str


def initialise(data_dir: Path) -> Initialised:
    result = run_coffer("init", "--data-dir", data_dir, "--output", "json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    return Initialised(data_dir, printed["organisation"], printed["token"], result.stdout)


def kms_headers(coffer: Initialised) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {coffer.token}",
        "X-Organisation-Identity": coffer.organisation,
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Initialised:
    """One initialised data directory for the tests that only read it (``coffer init`` costs
    about a second)."""
    return initialise(tmp_path_factory.mktemp("shared") / "data")


@pytest.fixture
def fresh(tmp_path: Path) -> Initialised:
    """An initialised data directory of this test alone, for tests that change it."""
    return initialise(tmp_path / "data")


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file's size, modification time and content."""
    return {
        path.name: (path.stat().st_size, path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(directory.iterdir())
    }


# --- coffer init -------------------------------------------------------------------------------


def test_init_output_json_prints_exactly_one_object_with_organisation_slug_and_token(
    shared: Initialised,
) -> None:
    lines = shared.stdout.splitlines()
    assert len(lines) == 1, shared.stdout
    printed = json.loads(lines[0])
    assert isinstance(printed, dict)
    assert set(printed) == INIT_KEYS
    assert printed["organisation"].startswith("org-")
    assert printed["organisationSlug"] == "default"
    assert printed["installation"].startswith("ins-")
    assert printed["seal"] == "file"
    assert isinstance(printed["token"], str)
    assert len(printed["token"]) >= 32


def test_init_creates_a_32_byte_root_key_readable_only_by_its_owner(shared: Initialised) -> None:
    root_key = shared.data_dir / "root.key"
    assert len(root_key.read_bytes()) == 32
    assert stat.S_IMODE(root_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.data_dir.stat().st_mode) == 0o700


@pytest.mark.sqlite_only
def test_init_refuses_an_initialised_directory_and_changes_nothing(fresh: Initialised) -> None:
    before = snapshot(fresh.data_dir)
    assert {"coffer.db", "root.key"} <= set(before)

    again = run_coffer("init", "--data-dir", fresh.data_dir, "--output", "json")

    assert again.returncode == 1
    assert "already initialised" in again.stderr
    assert "nothing was changed" in again.stderr
    assert again.stdout == "", "a script reading the JSON must get nothing"
    assert snapshot(fresh.data_dir) == before


# --- coffer serve: refusing to start -----------------------------------------------------------


def test_serve_refuses_an_uninitialised_directory_and_says_to_run_init(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()

    result = run_coffer("serve", "--data-dir", empty, "--port", str(free_port()))

    assert result.returncode == 1
    assert "coffer init" in result.stderr
    assert str(empty) in result.stderr
    assert list(empty.iterdir()) == [], "serve must not create anything in an empty directory"


def test_serve_refuses_to_start_without_the_root_key_file(fresh: Initialised) -> None:
    root_key = fresh.data_dir / "root.key"
    root_key.rename(fresh.data_dir.parent / "root.key.moved")

    result = run_coffer("serve", "--data-dir", fresh.data_dir, "--port", str(free_port()))

    assert result.returncode == 1
    assert "root key" in result.stderr
    assert str(root_key) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.sqlite_only
def test_serve_refuses_a_database_file_that_is_not_a_database(fresh: Initialised) -> None:
    database = fresh.data_dir / "coffer.db"
    database.write_bytes(random.Random(0).randbytes(5000))

    result = run_coffer("serve", "--data-dir", fresh.data_dir, "--port", str(free_port()))

    assert result.returncode == 1
    assert "is damaged" in result.stderr
    assert "restore it from your backup" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.sqlite_only
@pytest.mark.parametrize("which", ["coffer.db", "data directory", "audit-anchor.jsonl"])
def test_serve_tells_unwritable_files_from_a_damaged_database(
    fresh: Initialised, which: str
) -> None:
    """Healthy files this user cannot write (here: immutable) must not be called damaged: the
    advice to restore a backup would replace good data with older data."""
    target = fresh.data_dir if which == "data directory" else fresh.data_dir / which
    if which == "audit-anchor.jsonl":
        target.write_text('{"anchor": "anc-0000000000000000", "format": "coffer-audit-anchor/1"}\n')
    made = subprocess.run(["chattr", "+i", str(target)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert made.returncode == 0, f"this test makes files immutable with chattr: {made.stderr}"
    try:
        result = run_coffer("serve", "--data-dir", fresh.data_dir, "--port", str(free_port()))
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)
    assert result.returncode == 1
    assert f"{target} cannot be written by this user" in result.stderr
    assert "fix the access rather than restore a backup over it" in result.stderr
    assert "damaged" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.sqlite_only
def test_serve_refuses_an_empty_database_file_without_writing_to_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database = data_dir / "coffer.db"
    database.touch()

    result = run_coffer("serve", "--data-dir", data_dir, "--port", str(free_port()))

    assert result.returncode == 1
    assert "holds no Coffer schema" in result.stderr
    assert "coffer init" in result.stderr
    assert "Traceback" not in result.stderr
    assert database.stat().st_size == 0, "serve must not write to a database it refuses"
    assert [p.name for p in data_dir.iterdir()] == ["coffer.db"], "no -wal or -shm file"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[[regions]\nslug = 'nl-01'\n", "is not valid TOML"),
        ("[[regions]]\nslug = 'nl-01'\nkms_available = 'yes'\n", "kms_available"),
        ("listen = '0.0.0.0'\n", "unknown setting"),
    ],
    ids=["invalid-toml", "wrong-type", "unknown-setting"],
)
def test_serve_refuses_a_malformed_config_file_and_names_it(
    shared: Initialised, tmp_path: Path, content: str, problem: str
) -> None:
    config = tmp_path / "coffer.toml"
    config.write_text(content)

    result = run_coffer(
        "serve", "--data-dir", shared.data_dir, "--port", str(free_port()), "--config", config
    )

    assert result.returncode == 1
    assert str(config) in result.stderr
    assert problem in result.stderr
    assert "Traceback" not in result.stderr


# --- coffer serve: running ---------------------------------------------------------------------


def test_serve_with_config_file_lists_its_regions_and_their_availability(
    shared: Initialised, tmp_path: Path, serve: ServeFactory
) -> None:
    config = tmp_path / "coffer.toml"
    config.write_text(
        "[[regions]]\n"
        'slug = "nl-01"\n'
        'name = "Netherlands 01"\n'
        "kms_available = true\n"
        "\n"
        "[[regions]]\n"
        'slug = "be-01"\n'
        'name = "Belgium 01"\n'
        "kms_available = false\n"
    )
    port = free_port()
    serve("--data-dir", shared.data_dir, "--port", str(port), "--config", config, port=port)

    status, summary = http_get(port, "/v1/kms/summary", kms_headers(shared))

    assert status == 200, summary
    regions = {r["slug"]: (r["name"], r["kmsAvailable"]) for r in summary["regions"]}
    assert regions == {"nl-01": ("Netherlands 01", True), "be-01": ("Belgium 01", False)}
    status, error = http_post(
        port, "/v1/kms/be-01/keys", {"name": "k", "keyType": "aes256-gcm96"}, kms_headers(shared)
    )
    assert (status, error["code"]) == (503, "region_unavailable")


def test_serve_takes_data_dir_and_port_from_environment_variables(
    shared: Initialised, serve: ServeFactory
) -> None:
    port = free_port()
    serve(port=port, env={"COFFER_DATA_DIR": str(shared.data_dir), "COFFER_PORT": str(port)})

    status, summary = http_get(port, "/v1/kms/summary", kms_headers(shared))

    assert status == 200, summary
    assert summary["featureEnabled"] is True


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_access_log_never_holds_a_query_string(
    fresh: Initialised, serve: ServeFactory, tmp_path: Path, workers: str
) -> None:
    """A client that sends its token in the query string does not get it written to the log."""
    port = free_port()
    serve("--data-dir", fresh.data_dir, "--port", str(port), "--access-log",
          "--workers", workers, port=port)  # fmt: skip
    secret = "coffer_" + "q" * 40
    status, _ = http_get(port, f"/v1/kms/summary?access_token={secret}", kms_headers(fresh))
    assert status == 200
    log = (tmp_path / f"serve-{port}.log").read_text()
    assert '"GET /v1/kms/summary?… HTTP/1.1" 200' in log
    assert secret not in log
    assert "access_token" not in log
