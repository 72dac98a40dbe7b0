"""The host's listening socket, bound before anything else happens so a busy port refuses the start."""

from __future__ import annotations

import socket


class ListenError(Exception):
    """The address cannot be bound; the message says why."""


class UnknownHost(ListenError):
    """The interface name does not resolve."""


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (uvicorn serves it as handed over)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UnknownHost(f"cannot resolve: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart over TIME_WAIT
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ListenError(exc.strerror or str(exc)) from exc
    sock.set_inheritable(False)
    return sock
