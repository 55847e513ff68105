"""The app of one worker of ``coffer serve --workers N``.

uvicorn starts each worker process and builds its app with ``from_environment``, from the
settings ``coffer serve`` resolved and passed on in ``COFFER_*`` variables. The parent process
checks the data directory and migrates the schema before any worker starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette

from coffer.api.transport import TransportLimits, configure
from coffer.bootstrap import build_app, open_data_dir, redact_access_log, settle_garbage_collector
from coffer.config import load_settings


def from_environment() -> Starlette:
    config = os.environ.get("COFFER_CONFIG")
    settings = load_settings(
        Path(os.environ["COFFER_DATA_DIR"]),
        config_file=Path(config) if config else None,
        database_url=os.environ.get("COFFER_DATABASE_URL") or None,
        workers=int(os.environ.get("COFFER_WORKERS", "1")),
        log_format=os.environ.get("COFFER_LOG_FORMAT") or None,
    )
    app = build_app(settings, root=open_data_dir(settings))
    redact_access_log()
    configure(TransportLimits.of(settings))
    settle_garbage_collector()
    return app
