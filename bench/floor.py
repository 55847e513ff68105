"""The floor server of `bench/run.py`: one `POST /` that answers `{}` as JSON, nothing else,
served by uvicorn with the very settings of `coffer serve` (`coffer.cli.main.uvicorn_options`:
uvloop, httptools, no access log, no server header) and the same number of worker processes.
No server of this stack can answer a POST faster: Coffer's rps is measured against it.

    .venv/bin/python bench/floor.py --port 8300 [--workers 1]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coffer.cli.main import uvicorn_options
from coffer.config import Settings


async def empty(request: Request) -> Response:
    await request.body()  # read the request, as an endpoint with a JSON body would
    return Response(b"{}", media_type="application/json")


app = Starlette(routes=[Route("/", empty, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    settings = Settings(data_dir=Path(os.devnull), port=args.port, workers=args.workers)
    options = uvicorn_options(settings)
    if args.workers > 1:
        here = str(Path(__file__).resolve().parent)
        uvicorn.run("floor:app", workers=args.workers, app_dir=here, **options)
    else:
        uvicorn.run(app, **options)


if __name__ == "__main__":
    main()
