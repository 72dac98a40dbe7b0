"""Serve a Python web application object on 127.0.0.1:$PORT (bolt.main = "module:attribute").

Run by bolt-host with the app's own interpreter, from the app's folder:
``python pyserve.py package.module:attribute``.  It imports only the standard library and the
two servers bolt-host installs into the app's environment, never bolt-host itself.

The object is ASGI when it (or its ``__call__``) is a coroutine function or takes three
arguments (scope, receive, send), and is served by uvicorn; otherwise it is WSGI (environ,
start_response) and served by waitress.  SIGTERM ends either server cleanly with exit code 0.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

HOST = "127.0.0.1"


def load(reference: str) -> object:
    module_name, _, attribute = reference.partition(":")
    target: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def is_asgi(application: object) -> bool:
    call = application if inspect.isroutine(application) else getattr(application, "__call__", None)  # noqa: B004
    if call is None:
        raise TypeError("not callable")
    if inspect.iscoroutinefunction(call):
        return True
    try:
        parameters = [
            p
            for p in inspect.signature(call).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        return False
    return len(parameters) == 3


def serve_asgi(application: Any, port: int) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the signal after a graceful shutdown (exit -15); a stop asked
            # by the host is a clean exit, as for every other bolt-host app.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
            yield

    Server(uvicorn.Config(application, host=HOST, port=port, log_level="info")).run()


def serve_wsgi(application: object, port: int) -> None:
    from waitress.server import create_server

    server = create_server(application, host=HOST, port=port)

    def stop(signum: int, frame: object) -> None:
        server.close()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"pyserve: serving WSGI {sys.argv[1]} with waitress on http://{HOST}:{port}", flush=True)
    server.run()


def main() -> int:
    if len(sys.argv) != 2 or ":" not in sys.argv[1]:
        print("usage: pyserve.py package.module:attribute", file=sys.stderr)
        return 2
    port_text = os.environ.get("PORT", "")
    if not port_text.isdigit():
        print("pyserve: PORT is not set; bolt-host sets it for server apps", file=sys.stderr)
        return 2
    sys.path.insert(0, os.getcwd())  # the app's folder: its modules import as the author ran them
    try:
        application = load(sys.argv[1])
        asgi = is_asgi(application)
    except (ImportError, AttributeError, TypeError) as exc:
        print(f"pyserve: cannot load {sys.argv[1]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if asgi:
        print(f"pyserve: serving ASGI {sys.argv[1]} with uvicorn on http://{HOST}:{port_text}", flush=True)
        serve_asgi(application, int(port_text))
    else:
        serve_wsgi(application, int(port_text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
