from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bolt_host import hookimpl


async def hello(request):
    return PlainTextResponse("first")


@hookimpl
def register_routes(host):
    return [Route("/same", hello, methods=["GET"])]
