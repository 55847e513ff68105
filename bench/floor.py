"""The floor servers of `bench/run.py`: one `POST /` that answers `{}` as JSON, nothing else,
served by uvicorn with the very settings of `coffer serve` (`coffer.cli.main.uvicorn_options`:
uvloop, httptools, no access log, no server header) and the same number of worker processes.

* the floor (default): a Starlette endpoint — what Coffer's rps is measured against;
* `--bare`: a bare ASGI callable (no framework at all), the second floor: how much of the stack's
  time is uvicorn's own, so that a leaner dispatch's remaining headroom shows.

    .venv/bin/python bench/floor.py --port 8300 [--workers 1] [--bare]
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

_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


async def bare(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    """The same answer without a framework: read the body, answer ``{}``."""
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"{}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--bare", action="store_true", help="a bare ASGI app, no framework")
    args = parser.parse_args()
    settings = Settings(data_dir=Path(os.devnull), port=args.port, workers=args.workers)
    options = uvicorn_options(settings)
    if args.bare:
        options["lifespan"] = "off"
    if args.workers > 1:
        here = str(Path(__file__).resolve().parent)
        target = "floor:bare" if args.bare else "floor:app"
        uvicorn.run(target, workers=args.workers, app_dir=here, **options)
    else:
        uvicorn.run(bare if args.bare else app, **options)


if __name__ == "__main__":
    main()
