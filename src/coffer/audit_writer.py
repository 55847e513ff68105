"""The audit writer process (``python -m coffer.audit_writer``), started by ``coffer serve``.

It reads the server's settings and the keys it needs (checkpoint signing, row MACs, audit links)
from its first frame (the root key stays with the server: a sealed server starts no writer),
opens the database and the audit anchor itself, and commits the batches the server sends
(``coffer.audit.process``). It ignores SIGINT and SIGTERM: it stops when the server closes its
pipe, after the batch under way, so that a graceful shutdown loses no record, and when the server
dies, since the pipe closes then too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import IO

from coffer.audit.anchor import Anchor
from coffer.audit.committer import BatchCommitter
from coffer.audit.process import WriterStartup, read_frame, serve
from coffer.audit.sinks import RequiredSinks
from coffer.bootstrap import audit_status, settle_garbage_collector, utc_now
from coffer.crypto.integrity import AuditLinks, RowMacs
from coffer.crypto.signing import CheckpointSigner
from coffer.logs import LOGGER as DEPENDENCIES
from coffer.logs import configure
from coffer.service.integrity import RowIntegrity
from coffer.storage.database import create_engine_for, create_sync_engine_for
from coffer.storage.sql import SqlStore
from coffer.storage.sql_audit import SqlAuditStore


async def _run(startup: WriterStartup, requests: IO[bytes], replies: IO[bytes]) -> None:
    settings = startup.settings
    macs = RowMacs(startup.row_mac_key)
    # The writer reads no authenticated row but through the changes, which check their MACs.
    store = SqlStore(create_engine_for(settings.url, pool_size=1), RowIntegrity(lambda: macs))
    audit_store = SqlAuditStore(store, create_sync_engine_for(settings.url), lambda: macs)
    try:
        committer = BatchCommitter(
            audit_store,
            CheckpointSigner(startup.signing_seed),
            AuditLinks(startup.link_key).link,
            utc_now,
            audit_status,
            checkpoint_every=settings.audit_checkpoint_every,
            anchor=Anchor(settings.anchor_path),
            sinks=RequiredSinks(settings.audit_sinks),
        )
        try:
            await serve(committer, requests, replies)
        finally:
            await committer.close()
    finally:
        await audit_store.close()
        await store.close()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Frames go to the server on the original stdout; anything printed goes to stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    startup = read_frame(sys.stdin.buffer)
    if not isinstance(startup, WriterStartup):
        raise SystemExit("coffer.audit_writer is started by `coffer serve`, not by hand")
    configure(startup.settings.log_level, startup.settings.log_format)
    # A dependency away (the database, a sink) is the server's to log, once: the writer's
    # answer carries the cause.
    logging.getLogger(DEPENDENCIES).disabled = True
    settle_garbage_collector()
    asyncio.run(_run(startup, sys.stdin.buffer, replies))


if __name__ == "__main__":
    main()
