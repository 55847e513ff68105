"""How long a root key rotation takes over many organisations.

    .venv/bin/python bench/root_rotation.py [--organisations 10000] [--database-url URL]

Initialises a fresh installation (file seal; SQLite in a temporary directory, or the PostgreSQL
of ``--database-url``, in a schema of its own), writes ``--organisations`` organisations with
their KEKs wrapped by the root key straight into the database (what ``TenantService`` stores, in
one transaction: making them through the API would measure organisation creation instead), then
times ``RootRotation.start`` and ``run`` as a server runs them (batches of
``root_rotation_batch_size``, default 500, each one transaction). It checks the outcome: every
blob under the new generation, and a sample of KEKs unwrapping to what they were.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

from coffer.bootstrap import build_services, initialise
from coffer.config import Settings
from coffer.crypto.root import SoftwareCipher, open_blob, read_key_file, seal_blob
from coffer.crypto.wrapping import kek_aad
from coffer.domain.identity import ORGANISATION_PREFIX, new_identity
from coffer.storage import schema
from coffer.storage.database import create_sync_engine_for

BATCH = 5000


def add_organisations(settings: Settings, count: int) -> dict[str, bytes]:
    """``count`` organisations with random KEKs wrapped by generation 1; a sample of them."""
    root = SoftwareCipher(read_key_file(settings.root_key_path))
    now = datetime.now(UTC)
    sample: dict[str, bytes] = {}
    engine = create_sync_engine_for(settings.url)
    try:
        with engine.begin() as conn:
            for first in range(0, count, BATCH):
                organisations, keks = [], []
                for n in range(first, min(first + BATCH, count)):
                    identity = new_identity(ORGANISATION_PREFIX)
                    kek = os.urandom(32)
                    organisations.append({"identity": identity, "slug": f"bench-{n}",
                                          "name": f"Bench {n}", "kms_enabled": True,
                                          "created_at": now, "object_version": 1})  # fmt: skip
                    keks.append({"organisation_identity": identity, "created_at": now,
                                 "wrapped_kek": seal_blob(root, 1, kek, kek_aad(identity)),
                                 "root_generation": 1})  # fmt: skip
                    if n % (count // 10 or 1) == 0:
                        sample[identity] = kek
                conn.execute(insert(schema.organisations), organisations)
                conn.execute(insert(schema.organisation_keks), keks)
    finally:
        engine.dispose()
    return sample


async def rotate(settings: Settings, sample: dict[str, bytes]) -> tuple[float, int]:
    services = build_services(replace(settings, root_rotation_grace_seconds=0.0))
    try:
        began = time.perf_counter()
        await services.rotation.start()
        assert await services.rotation.run()
        took = time.perf_counter() - began
        status = await services.rotation.status()
        assert (status.active_generation, status.remaining) == (2, 0)
        for identity, kek in sample.items():
            blob = await services.store.wrapped_kek(identity)
            assert blob is not None
            assert await services.root.unwrap(blob, kek_aad(identity)) == kek
            new_key = SoftwareCipher(settings.root_key_path.read_bytes())
            assert open_blob(new_key, blob, kek_aad(identity)) == kek
        return took, status.active_generation
    finally:
        await services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--organisations", type=int, default=10_000)
    parser.add_argument("--database-url", default=None, help="postgresql://… (default SQLite)")
    parser.add_argument("--batch", type=int, default=Settings(Path()).root_rotation_batch_size)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url
        if url is not None:
            import psycopg

            schema_name = f"bench_{secrets.token_hex(4)}"
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema_name}"')
            url = f"{url}?options=-csearch_path%3D{schema_name}"
        settings = Settings(data_dir=Path(tmp) / "data", database_url=url, audit_writer="thread",
                            root_rotation_batch_size=args.batch)  # fmt: skip
        asyncio.run(initialise(settings))
        began = time.perf_counter()
        sample = add_organisations(settings, args.organisations)
        written = time.perf_counter() - began
        took, generation = asyncio.run(rotate(settings, sample))
    engine = "PostgreSQL" if args.database_url else "SQLite"
    total = args.organisations + 1
    print(f"{engine}: {total} organisations written in {written:.1f} s; root rotation to "
          f"generation {generation}: {took:.2f} s ({total / took:,.0f} KEKs/s, batches of "
          f"{args.batch}, file seal)")  # fmt: skip


if __name__ == "__main__":
    main()
