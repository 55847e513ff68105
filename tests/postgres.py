"""A private PostgreSQL cluster for the tests that need one whatever engine the suite runs on
(several nodes on one database): the cluster of ``COFFER_TEST_DATABASE_URL`` when it is given,
else one started here from Debian's ``postgresql`` package, on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: initdb refuses to run as root; the cluster then runs as this user.
CLUSTER_USER = "postgres"


def _bin(name: str) -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found[-1]


def _as_cluster_user(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", CLUSTER_USER, "--", *args]
    return args


def pg_ctl(data: Path, *args: str) -> None:
    subprocess.run(_as_cluster_user([str(_bin("pg_ctl")), "-D", str(data), *args]), check=True,
                   capture_output=True, timeout=60)  # fmt: skip


@contextmanager
def private_cluster() -> Iterator[tuple[str, Path]]:
    """(URL of database ``postgres``, data directory) of a new cluster, stopped and removed at
    the end. Its directory is directly under the system's temporary directory: the cluster's
    user must be able to reach it, which pytest's per-user directories do not allow."""
    directory = Path(tempfile.mkdtemp(prefix="coffer-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, CLUSTER_USER)
    data = directory / "data"
    subprocess.run(
        _as_cluster_user([str(_bin("initdb")), "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c max_connections=200"
    pg_ctl(data, "-l", str(directory / "log"), "-w", "-o", options, "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", data
    finally:
        pg_ctl(data, "-m", "immediate", "stop")
        shutil.rmtree(directory, ignore_errors=True)


def new_schema(cluster_url: str) -> str:
    """The URL of a new, empty schema of the cluster's database (one per test or app)."""
    import secrets

    import psycopg

    schema = f"coffer_test_{secrets.token_hex(6)}"
    with psycopg.connect(cluster_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    return f"{cluster_url}?options=-csearch_path%3D{schema}"
