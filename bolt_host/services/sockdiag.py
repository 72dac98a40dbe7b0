"""Listening TCP sockets of a port or a range of ports, asked of the kernel through ``sock_diag`` netlink.

What ``ss -ltn sport = :PORT`` does: the kernel walks only its listening sockets and hands
back those whose port matches (a two-instruction filter), with each socket's inode.  Reading
``/proc/net/tcp`` instead formats every socket of the network namespace as text, TIME_WAIT
included: with 200 apps and their readiness probes that was several milliseconds per start,
and a start of 200 apps read it 200 times (most of the host's CPU in such a start).

One dump over the port pool's range also tells which of many starting apps listen yet
(:mod:`readiness`): one request for all of them instead of a connect per app per round.

Linux only; the functions raise ``OSError`` where the netlink family is not there, and the
callers fall back to the text tables or to connecting.
"""

from __future__ import annotations

import functools
import itertools
import socket
import struct
from collections.abc import Sequence

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP, INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE = 1, 2, 3
BLOCK = 20  # bytes of one range in a filter program: two comparisons (8 bytes each) and a jump
TCPF_LISTEN = 1 << 10

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_REQUEST = struct.Struct("=BBBBI48x")  # inet_diag_req_v2 (family, protocol, ext, pad, states, an unused sockid)
_OP = struct.Struct("=BBH")  # inet_diag_bc_op: code, yes (jump when true), no (jump when false)
SPORT_OFFSET = _HEADER.size + 4  # inet_diag_msg: 4 bytes of family/state/timer/retrans, then sockid.sport (be16)
INODE_OFFSET = _HEADER.size + 4 + 48 + 16  # after sockid: expires, rqueue, wqueue, uid, then the inode
_sequence = itertools.count(1)


def listening_inodes(port: int) -> set[str]:
    """Inodes (as decimal strings, as in ``/proc/<pid>/fd`` links) of the IPv4 and IPv6
    sockets listening on ``port``."""
    return {str(inode) for _, inode in listening(port, port)}


def listening_ports(low: int, high: int) -> set[int]:
    """The ports from ``low`` to ``high`` that something listens on (IPv4 or IPv6)."""
    return {port for port, _ in listening(low, high)}


def listening(low: int, high: int) -> list[tuple[int, int]]:
    """``(port, inode)`` of every TCP socket listening on a port from ``low`` to ``high``."""
    with open_channel() as channel:
        return listening_in(channel, [(low, high)])


def listening_in(channel: socket.socket, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """:func:`listening` for several ranges of ports at once (ordered, not overlapping), through
    ``channel`` (from :func:`open_channel`), which a caller asking every few milliseconds keeps
    open.  Only the sockets of those ports come back: the many already listening between them
    cost neither the kernel's formatting nor our parsing."""
    return [*_dump(channel, socket.AF_INET, ranges), *_dump(channel, socket.AF_INET6, ranges)]


def open_channel() -> socket.socket:
    """A ``sock_diag`` netlink socket for :func:`listening`."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)


@functools.lru_cache(maxsize=16)  # a sweep asks with the same ranges round after round
def _port_filter(ranges: tuple[tuple[int, int], ...]) -> bytes:
    """``sport`` in any of ``ranges``.  Per range: ``sport >= low`` and ``sport <= high`` (a false
    one jumps to the next range or, after the last, 4 bytes beyond the end, which the kernel
    reads as "no match"), then a ``JMP`` (always its "no" jump) to the end: a match.  The
    kernel's check of a program follows the "yes" jumps, so every range must lie on that path."""
    size = BLOCK * len(ranges)
    ops = []
    for index, (low, high) in enumerate(ranges):
        at = BLOCK * index
        miss = at + BLOCK if index + 1 < len(ranges) else size + 4  # where a false condition goes
        ops += [
            _OP.pack(INET_DIAG_BC_S_GE, 8, miss - at), _OP.pack(0, 0, low),
            _OP.pack(INET_DIAG_BC_S_LE, 8, miss - at - 8), _OP.pack(0, 0, high),
            _OP.pack(INET_DIAG_BC_JMP, 4, size - at - 16),
        ]
    return b"".join(ops)


def _dump(channel: socket.socket, family: int, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    program = _port_filter(tuple(ranges))
    low, high = ranges[0][0], ranges[-1][1]
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, TCPF_LISTEN) + struct.pack(
        "=HH", 4 + len(program), INET_DIAG_REQ_BYTECODE
    ) + program
    sequence = next(_sequence)
    channel.sendto(
        _HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0) + body,
        (0, 0),
    )
    found: list[tuple[int, int]] = []
    while True:
        data = channel.recv(65536)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                raise OSError("sock_diag: malformed reply")
            if seq == sequence:
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", data, offset + _HEADER.size)
                    raise OSError(-error, "sock_diag refused the request")
                if kind == SOCK_DIAG_BY_FAMILY and length >= INODE_OFFSET + 4:
                    (port,) = struct.unpack_from(">H", data, offset + SPORT_OFFSET)
                    if low <= port <= high:  # the filter already chose these; checked all the same
                        found.append((port, struct.unpack_from("=I", data, offset + INODE_OFFSET)[0]))
            offset += (length + 3) & ~3
