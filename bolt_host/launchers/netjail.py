"""First step inside a dependency install's own network namespace: open the way to the registry.

Run by bolt-host (``python -I -S netjail.py -- tool args...``) right after ``unshare --net`` or
``bwrap --unshare-net``, before the install drops to the app's uid.  The namespace has only a
loopback interface, so nothing in it reaches any other machine or the host's own loopback.
This script brings that loopback up, listens on ``127.0.0.1:<free port>`` there, hands the
listening socket to the host through the descriptor named by ``BOLT_EGRESS_FD`` (the host
answers on it as an HTTP proxy that connects only to the configured registry or index),
points the tool's proxy settings at it and execs the tool: same pid, nothing left running.

Standard library only: it runs with the host's interpreter before any app code.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import sys

FD_VARIABLE = "BOLT_EGRESS_FD"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                   "npm_config_proxy", "npm_config_https_proxy")
BYPASS_VARIABLES = ("NO_PROXY", "no_proxy", "npm_config_noproxy")
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ = "16sH14x"


def loopback_up() -> None:
    """``ip link set lo up`` (bubblewrap did it already; a bare ``unshare --net`` does not)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        flags = struct.unpack(IFREQ, fcntl.ioctl(probe, SIOCGIFFLAGS, struct.pack(IFREQ, b"lo", 0)))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))


def hand_over(channel_fd: int) -> int:
    """Listen on loopback, send the listening socket to the host, return its port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port: int = listener.getsockname()[1]
    with socket.socket(fileno=channel_fd) as channel:
        fds = array.array("i", [listener.fileno()])
        channel.sendmsg([str(port).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    listener.close()
    return port


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: netjail.py -- command [args...]", file=sys.stderr)
        return 2
    env = dict(os.environ)
    try:
        channel_fd = int(env.pop(FD_VARIABLE))
        loopback_up()
        port = hand_over(channel_fd)
    except (KeyError, ValueError, OSError) as exc:
        print(f"bolt-host: could not open the way to the registry: {exc}", file=sys.stderr)
        return 125
    for name in BYPASS_VARIABLES:
        env.pop(name, None)
    env.update({name: f"http://127.0.0.1:{port}" for name in PROXY_VARIABLES})
    try:
        os.execvpe(argv[2], argv[2:], env)
    except OSError as exc:
        print(f"bolt-host: could not run {argv[2]}: {exc}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
